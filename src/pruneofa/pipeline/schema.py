"""The pipeline recipe: named steps run in order, each a registered stage with its own recipe + overrides.

    output_dir: runs/demo
    steps:                          # a mapping, run in the order written; the key is the step name
      teacher:
        stage: teacher              # a registered stage (pruneofa --help) or `eval`
        recipe: offline             # shipped name or YAML path (default: offline)
        overrides:                  # nested or dotted keys, applied like `key=value` on the command line
          train.max_steps: 200
      prune:
        stage: prune
        overrides:
          model: ${teacher}         # ${step} is that earlier step's output directory
    quick:                          # `--quick` (demo) or quick=true: applied over the steps' overrides
      teacher: {train.max_steps: 20}
    report: {dense: rt-teacher, sparse: rt-sparse, pruning: prune}   # optional; defaults by stage

Every step writes to `<output_dir>/<step name>` unless its overrides set output_dir.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from pruneofa.config.base import StrictModel
from pruneofa.config.loader import validate
from pruneofa.pipeline.commands import COMMANDS, check_options
from pruneofa.stages.registry import STAGES
from pruneofa.config.base import StrictModel

REF = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def flatten(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'max_steps': 5}, 'pruning.target_sparsity': 0.9} -> dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def references(value: Any) -> list[str]:
    return REF.findall(value) if isinstance(value, str) else []


class StepSpec(StrictModel):
    stage: str = Field(description="a registered CLI stage, or a command: eval, export, bench")
    recipe: str | None = Field(None, description="shipped recipe name or YAML path (default: the stage's offline recipe)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted or nested keys of the stage recipe")

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, stage: str) -> str:
        known = list(STAGES)
        if stage not in known:
            raise ValueError(f"unknown stage '{stage}' (this pruneofa has: {', '.join(known)})")
        return stage

    @field_validator("overrides")
    @classmethod
    def _flat(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        return flatten(overrides)

    @model_validator(mode="after")
    def _command_options(self) -> "StepSpec":
        if self.stage in COMMANDS and self.stage != "eval" and self.recipe is not None:
            raise ValueError(f"a {self.stage} step takes no recipe, only its options as overrides")
        check_options(self.stage, list(self.overrides))
        return self


class ReportSpec(StrictModel):
    dense: str | None = Field(None, description="step of the dense task model (default: the last finetune step)")
    sparse: str | None = Field(None, description="step of the sparse task model (default: the last transfer step)")
    sparse_int8: str | None = Field(None, description="step of the quantized sparse model (default: the last quantize step)")
    pruning: str | None = Field(None, description="step of the student pruning (default: the last prune step)")
    bench: str | None = Field(None, description="step of a latency benchmark (default: the last bench step)")
    retrieval_dense: str | None = Field(None, description="retrieval eval step of the dense LM teacher (default: "
                                        "the one whose model is the model the pruning step started from)")
    retrieval_sparse: str | None = Field(None, description="retrieval eval step of the sparse pre-trained model "
                                         "(default: the one whose model is the pruning step's output)")


class PipelineRecipe(StrictModel):
    output_dir: str
    steps: dict[str, StepSpec]
    quick: dict[str, dict[str, Any]] = Field(default_factory=dict, description="step -> overrides for --quick")
    report: ReportSpec = Field(default_factory=ReportSpec)

    @field_validator("quick")
    @classmethod
    def _flat_quick(cls, quick: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {name: flatten(overrides or {}) for name, overrides in quick.items()}

    @model_validator(mode="after")
    def _consistent(self) -> "PipelineRecipe":
        if not self.steps:
            raise ValueError("a pipeline needs at least one step")
        names = list(self.steps)
        for i, (name, step) in enumerate(self.steps.items()):
            if not NAME.match(name):
                raise ValueError(f"step name '{name}' may only hold letters, digits, '_', '-' and '.'")
            for key, value in step.overrides.items():
                for ref in references(value):
                    if ref not in names[:i]:
                        raise ValueError(f"step '{name}': {key}=${{{ref}}} names no earlier step "
                                         f"(earlier: {', '.join(names[:i]) or 'none'})")
        for name in self.quick:
            if name not in self.steps:
                raise ValueError(f"quick names an unknown step '{name}' (steps: {', '.join(names)})")
        for role, name in self.report.model_dump().items():
            if name is not None and name not in self.steps:
                raise ValueError(f"report.{role} names an unknown step '{name}'")
        return self

    def step_for(self, role: str) -> str | None:
        """The step that plays `role` in the report: named in report:, else found by its stage."""
        named = getattr(self.report, role)
        if named:
            return named
        by_stage = {"dense": "finetune", "sparse": "transfer", "sparse_int8": "quantize", "pruning": "prune",
                    "bench": "bench"}.get(role)
        found = [n for n, s in self.steps.items() if s.stage == by_stage]
        return found[-1] if found else None


def validate_pipeline(data: dict[str, Any]) -> PipelineRecipe:
    return validate(PipelineRecipe, data)
