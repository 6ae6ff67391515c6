"""`PruningConfig`: what to prune, to which pattern, and when. Shared by recipes, the Trainer
callback and the plain-loop API, so each rejects the same unknown keys and impossible values."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pruneofa.config.base import StrictModel
from pruneofa.sparsity.criteria import CRITERIA
from pruneofa.sparsity.patterns import Pattern, check_pattern_fits, parse_pattern

# Linear layers inside the repeated transformer blocks (`.<index>.` in the name), plus the pooler.
# This keeps embeddings and every head (cls.*, lm_head, classifier, qa_outputs, ...) dense.
DEFAULT_INCLUDE = [r"\.\d+\.", r"(^|\.)pooler\."]


class PruningConfig(StrictModel):
    method: Literal["gmp", "oneshot", "lock", "none"] = Field(
        "gmp", description="gmp: gradual magnitude pruning; oneshot: all at start_step; "
        "lock: keep the current zero pattern fixed (sparse transfer); none: dense"
    )
    pattern: str = Field("unstructured", description="unstructured | block:RxC | nm:N:M | structured | hybrid")
    scope: Literal["layer", "global"] = Field("layer", description="layer: every matrix hits the target")
    criterion: str = Field("magnitude", description="which weights go: magnitude (|w|) | obs (Optimal BERT "
                           "Surgeon, w^2 / 2[F^-1]_ii from recent gradients) | wanda (|w| * ||x||)")
    obs_block_size: int = Field(32, ge=1, description="obs: Fisher blocks of this many consecutive weights "
                                "(memory at the update: out*in*B floats per layer, built in chunks)")
    obs_num_grads: int = Field(16, ge=1, description="obs: gradients of the last m updates before each mask "
                               "update (held only then: m x prunable weights fp32)")
    obs_damp: float = Field(1e-7, gt=0.0, description="obs: dampening lambda of F = lambda I + (1/m) sum g g^T, "
                            "in squared-gradient units")
    obs_update_weights: bool = Field(False, description="obs: also move the surviving weights of each block "
                                     "(OBS update) to make up for the pruned ones")
    reconstruct: bool = Field(False, description="wanda: after each mask update, move each layer's surviving "
                              "weights to make up for the pruned ones on the inputs it saw (SparseGPT's update "
                              "with H = X^T X: an in x in matrix per layer)")
    reconstruct_damp: float = Field(0.01, gt=0.0, description="reconstruct: H + lambda I with lambda = this "
                                    "share of the mean of diag(H)")
    calibration_steps: int | None = Field(None, ge=1, description="wanda: count the layers' inputs only in the "
                                          "last this-many steps before each mask update (default, or more than "
                                          "pruning.frequency: every step since the last update; with reconstruct, "
                                          "X^T X costs 2 x tokens x in^2 per layer)")
    target_sparsity: float = Field(0.9, ge=0.0, lt=1.0, description="final weight sparsity; structured: the "
                                   "default of ffn_sparsity and head_sparsity")
    ffn_sparsity: float | None = Field(None, ge=0.0, lt=1.0, description="structured/hybrid: fraction of FFN "
                                       "neurons removed in every block (structured: default target_sparsity)")
    head_sparsity: float | None = Field(None, ge=0.0, lt=1.0, description="structured/hybrid: fraction of "
                                        "attention heads removed in every block (structured: default target_sparsity)")
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    start_step: int = Field(0, ge=0, description="t0: first mask update")
    target_step: int = Field(1000, ge=0, description="t1: the target is reached here")
    stop_step: int | None = Field(None, ge=0, description="last mask update (default target_step); frozen after")
    frequency: int = Field(100, ge=1, description="Δ: masks recomputed every this many steps")
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=list)

    @property
    def parsed_pattern(self) -> Pattern:
        """`pattern` parsed (a few string operations: derived when asked, never cached beside `pattern`)."""
        return parse_pattern(self.pattern)

    @field_validator("pattern")
    @classmethod
    def _pattern_parses(cls, value: str) -> str:
        return str(parse_pattern(value))

    @field_validator("criterion")
    @classmethod
    def _criterion_known(cls, value: str) -> str:
        if value not in CRITERIA:
            raise ValueError(f"unknown pruning.criterion '{value}': use one of {', '.join(CRITERIA)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "PruningConfig":
        if self.method == "gmp":
            if self.target_step <= self.start_step:
                raise ValueError(
                    f"pruning.target_step ({self.target_step}) must come after pruning.start_step ({self.start_step})"
                )
            if self.initial_sparsity > self.target_sparsity:
                raise ValueError("pruning.initial_sparsity must not exceed pruning.target_sparsity")
        if self.stop_step is not None and self.stop_step < self.target_step and self.method == "gmp":
            raise ValueError(
                f"pruning.stop_step ({self.stop_step}) must not come before pruning.target_step ({self.target_step})"
            )
        if self.method in ("gmp", "oneshot"):
            check_pattern_fits(self.parsed_pattern, self.target_sparsity)
        self._check_group_targets()
        self._check_criterion()
        return self

    def _check_criterion(self) -> None:
        if self.criterion != "wanda" and (self.calibration_steps is not None or self.reconstruct):
            raise ValueError(f"pruning.calibration_steps and pruning.reconstruct work on the inputs that criterion "
                             f"wanda observes; criterion {self.criterion} observes none: use pruning.criterion=wanda")
        if self.criterion == "magnitude":
            return
        if self.method not in ("gmp", "oneshot"):
            raise ValueError(f"pruning.criterion={self.criterion} chooses the weights gmp and oneshot remove; "
                             f"method {self.method} removes none: leave pruning.criterion=magnitude")
        if self.parsed_pattern.grouped:
            raise ValueError(f"pattern {self.pattern} chooses whole FFN neurons and heads by their L2 norm, not by "
                             f"pruning.criterion={self.criterion}: use criterion magnitude, or pattern "
                             "unstructured, block:RxC or nm:N:M")
        if self.criterion == "obs" and self.method == "gmp" and self.obs_num_grads > self.frequency:
            raise ValueError(f"pruning.obs_num_grads ({self.obs_num_grads}) must not exceed pruning.frequency "
                             f"({self.frequency}): the gradients of one mask update come from the steps since the last")

    def _check_group_targets(self) -> None:
        pattern = self.pattern
        if not self.parsed_pattern.grouped:
            if self.ffn_sparsity is not None or self.head_sparsity is not None:
                raise ValueError(f"pruning.ffn_sparsity and pruning.head_sparsity apply to pattern structured or "
                                 f"hybrid, not {pattern}")
            return
        if self.scope != "layer":
            raise ValueError(f"pattern {pattern} prunes the same share of every block: use pruning.scope=layer")
        if self.method in ("gmp", "oneshot") and self.target_sparsity == 0:
            raise ValueError(f"pattern {pattern} follows the schedule of pruning.target_sparsity: set it above 0")
        if pattern == "hybrid" and (self.ffn_sparsity is None or self.head_sparsity is None):
            raise ValueError("pattern hybrid needs pruning.ffn_sparsity and pruning.head_sparsity (the groups); "
                             "pruning.target_sparsity is then the weight sparsity of every layer")

    @property
    def ffn_target(self) -> float:
        """Final fraction of FFN neurons pruned (structured/hybrid)."""
        return self.target_sparsity if self.ffn_sparsity is None else self.ffn_sparsity

    @property
    def head_target(self) -> float:
        """Final fraction of attention heads pruned (structured/hybrid)."""
        return self.target_sparsity if self.head_sparsity is None else self.head_sparsity

    @property
    def last_update_step(self) -> int:
        return self.target_step if self.stop_step is None else self.stop_step
