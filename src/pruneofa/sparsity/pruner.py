"""`Pruner`: puts masks on a model and moves them along a schedule.

It joins the three separate concerns: *which* layers (`selection`), *what shape* of zeros
(`patterns`, and `structured` for groups spanning layers: FFN neurons, attention heads) and *when*
(`schedules`). Sparse transfer is the same object with `method="lock"`: the mask is the current
zero pattern and never changes.

    pruner = Pruner(model, PruningConfig(target_sparsity=0.9, target_step=5000, frequency=100))
    for step, batch in enumerate(batches, start=1):
        loss(model, batch).backward(); optimizer.step(); optimizer.zero_grad()
        pruner.step(step)
    pruner.finalize()          # fold masks into the weights before save_pretrained
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pruneofa.errors import UserError
from pruneofa.sparsity import masks as M
from pruneofa.sparsity.config import PruningConfig
from pruneofa.sparsity.groups import Block, find_blocks
from pruneofa.sparsity.patterns import global_masks, layer_mask, parse_pattern
from pruneofa.sparsity.schedules import gmp_sparsity, is_update_step, one_shot_sparsity
from pruneofa.sparsity.structured import hybrid_masks, structured_masks


class Pruner:
    def __init__(self, model: nn.Module, config: PruningConfig | dict[str, Any] | None = None, **overrides: Any):
        if config is None or isinstance(config, dict):
            config = PruningConfig(**{**(config or {}), **overrides})
        elif overrides:
            config = config.model_copy(update=overrides)
            config = PruningConfig.model_validate(config.model_dump())
        self.config = config
        self.pattern = parse_pattern(config.pattern)
        self.model = model
        self.layers: dict[str, nn.Module] = {}
        self.blocks: list[Block] = []
        if config.method == "none":
            return
        from pruneofa.sparsity.selection import select_prunable

        self.layers = select_prunable(model, config.include, config.exclude)
        if not self.layers:
            raise UserError(
                "no layer matches pruning.include/pruning.exclude",
                "check the regexes against the module names (pruneofa inspect lists them)",
            )
        if self.pattern.grouped and config.method in ("gmp", "oneshot"):
            self.blocks = find_blocks(model, self.layers)
            if not self.blocks:
                raise UserError(
                    f"pattern {self.pattern} found no transformer block with all its attention and FFN layers selected",
                    "it knows BERT, RoBERTa, DistilBERT and GPT-2 blocks; check pruning.include/pruning.exclude",
                )
        for module in self.layers.values():
            current = M.get_mask(module) if M.has_mask(module) else None
            if config.method == "lock":
                current = module.weight.detach() != 0
            M.attach_mask(module, current)
        if config.method in ("gmp", "oneshot"):
            self.step(0)

    # --- schedule -----------------------------------------------------------------------------
    def sparsity_at(self, step: int) -> float:
        """Scheduled sparsity of the masks after `step` (0 for lock/none: their masks don't move)."""
        c = self.config
        if c.method == "gmp":
            return gmp_sparsity(
                step, c.initial_sparsity, c.target_sparsity, c.start_step, c.target_step, c.last_update_step, c.frequency
            )
        if c.method == "oneshot":
            return one_shot_sparsity(step, c.target_sparsity, c.start_step)
        return 0.0

    def is_update_step(self, step: int) -> bool:
        c = self.config
        if c.method == "gmp":
            return is_update_step(step, c.start_step, c.last_update_step, c.frequency)
        return c.method == "oneshot" and step == c.start_step

    def step(self, step: int) -> bool:
        """Call after optimizer step `step` (1-based; 0 before training). True if masks changed."""
        if not self.is_update_step(step):
            return False
        self.update_masks(self.sparsity_at(step))
        return True

    # --- masks --------------------------------------------------------------------------------
    def group_fractions(self, sparsity: float) -> tuple[float, float]:
        """(FFN neurons, heads) pruned when the schedule is at `sparsity`: every target follows the
        schedule in proportion, at the same share s(t) / target_sparsity of its final value."""
        c = self.config
        progress = sparsity / c.target_sparsity if c.target_sparsity > 0 else 1.0
        return c.ffn_target * progress, c.head_target * progress

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        """Recompute every mask at `sparsity` by magnitude; pruned weights never come back.
        Structured/hybrid: the groups go to `group_fractions(sparsity)`; hybrid weights to `sparsity`."""
        views = {
            name: (M.as_out_in(mod, M.original_weight(mod)), M.as_out_in(mod, M.get_mask(mod)))
            for name, mod in self.layers.items()
        }
        if self.pattern.kind == "structured":
            new = structured_masks(views, self.blocks, *self.group_fractions(sparsity))
        elif self.pattern.kind == "hybrid":
            new = hybrid_masks(views, self.blocks, *self.group_fractions(sparsity), sparsity)
        elif self.config.scope == "global":
            new = global_masks({n: w for n, (w, _) in views.items()}, {n: m for n, (_, m) in views.items()},
                               sparsity, self.pattern)
        else:
            new = {n: layer_mask(w, m, sparsity, self.pattern) for n, (w, m) in views.items()}
        for name, module in self.layers.items():
            mask = M.from_out_in(module, new[name])
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                # identical masks on every rank: rank 0 decides, the others follow
                mask = mask.to(torch.uint8)
                dist.broadcast(mask, src=0)
            M.set_mask(module, mask.bool())

    def masks(self) -> dict[str, torch.Tensor]:
        return {name: M.get_mask(mod).detach().clone() for name, mod in self.layers.items()}

    def load_masks(self, masks: dict[str, torch.Tensor]) -> None:
        missing = set(self.layers) - set(masks)
        if missing:
            raise UserError(
                f"saved masks lack {len(missing)} pruned layers (e.g. {sorted(missing)[0]})",
                "resume with the recipe the checkpoint was made with",
            )
        for name, module in self.layers.items():
            M.set_mask(module, masks[name])

    # --- report -------------------------------------------------------------------------------
    def _keep(self, module: nn.Module) -> torch.Tensor:
        # after finalize() the masks are folded: the zeros themselves are the pattern
        return M.get_mask(module) if M.has_mask(module) else module.weight != 0

    def layer_sparsity(self) -> dict[str, float]:
        return {name: 1.0 - self._keep(mod).float().mean().item() for name, mod in self.layers.items()}

    def overall_sparsity(self) -> float:
        zeros = sum((~self._keep(mod)).sum().item() for mod in self.layers.values())
        total = sum(mod.weight.numel() for mod in self.layers.values())
        return zeros / total if total else 0.0

    def finalize(self) -> nn.Module:
        """Fold every mask into its weight; the model is a plain transformers model again."""
        for module in self.layers.values():
            M.fold_mask(module)
        return self.model
