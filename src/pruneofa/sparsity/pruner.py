"""`Pruner`: puts masks on a model and moves them along a schedule.

It joins four separate concerns: *which* layers (`selection`), *which weights* matter
(`criteria`: magnitude, OBS, Wanda), *what shape* of zeros (`patterns`, and `structured` for
groups spanning layers: FFN neurons, attention heads) and *when* (`schedules`). Sparse transfer is
the same object with `method="lock"`: the mask is the current zero pattern and never changes.

    pruner = Pruner(model, PruningConfig(target_sparsity=0.9, target_step=5000, frequency=100))
    for step, batch in enumerate(batches, start=1):
        loss(model, batch).backward()
        pruner.observe_gradients(step)   # criterion obs: the gradients before an update (else a no-op)
        # (wanda counts the inputs of the forwards in its forward hooks, no call needed)
        optimizer.step(); optimizer.zero_grad()
        pruner.step(step)
    pruner.finalize()          # fold masks into the weights (and drop hooks) before save_pretrained

Under DDP every process runs the same calls; rank 0's masks (and, with obs_update_weights or
reconstruct, its updated weights) are broadcast so that all processes stay identical.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pruneofa.errors import UserError
from pruneofa.sparsity import masks as M
from pruneofa.sparsity.config import PruningConfig
from pruneofa.sparsity.criteria import Criterion, make_criterion
from pruneofa.sparsity.groups import Block, find_blocks, known_families
from pruneofa.sparsity.patterns import global_masks, layer_mask
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
        self.pattern = config.parsed_pattern
        self.model = model
        self.layers: dict[str, nn.Module] = {}
        self.blocks: list[Block] = []
        self.criterion: Criterion | None = None
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
                    f"it knows {known_families()} blocks; check pruning.include/pruning.exclude",
                )
        for module in self.layers.values():
            current = M.get_mask(module) if M.has_mask(module) else None
            if config.method == "lock":
                current = module.weight.detach() != 0
            M.attach_mask(module, current)
        if config.method in ("gmp", "oneshot"):
            self.criterion = make_criterion(config, self.layers)
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

    def observe_gradients(self, step: int) -> None:
        """Call after the backward of update `step` (1-based) and before `optimizer.step()`.

        Criteria that need gradients (obs) record them in the `obs_num_grads` steps that end at a
        mask update (t in [T - m + 1, T] for an update step T), so their buffer exists only then.
        """
        if self.criterion is None or not self.criterion.needs_gradients:
            return
        if any(self.is_update_step(t) for t in range(step, step + self.config.obs_num_grads)):
            self.criterion.observe_gradients()

    def observes_inputs_at(self, step: int) -> bool:
        """Whether the forwards of update `step` count for criteria that observe inputs (wanda): all
        of them, or only the `calibration_steps` that end at a mask update."""
        window = self.config.calibration_steps
        return window is None or any(self.is_update_step(t) for t in range(step, step + window))

    def step(self, step: int) -> bool:
        """Call after optimizer step `step` (1-based; 0 before training). True if masks changed."""
        changed = self.is_update_step(step)
        c = self.config
        if changed:
            self.update_masks(self.sparsity_at(step))
            if self.criterion is not None and (c.method == "oneshot" or step + c.frequency > c.last_update_step):
                self.criterion.close()  # the last update: stop observing (input hooks cost every forward)
        if self.criterion is not None:
            self.criterion.observe_inputs(self.observes_inputs_at(step + 1))
        return changed

    # --- masks --------------------------------------------------------------------------------
    def group_fractions(self, sparsity: float) -> tuple[float, float]:
        """(FFN neurons, heads) pruned when the schedule is at `sparsity`: every target follows the
        schedule in proportion, at the same share s(t) / target_sparsity of its final value."""
        c = self.config
        progress = sparsity / c.target_sparsity if c.target_sparsity > 0 else 1.0
        return c.ffn_target * progress, c.head_target * progress

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        """Recompute every mask at `sparsity` from the criterion's scores; pruned weights never come
        back. Structured/hybrid: the groups (by L2 norm) go to `group_fractions(sparsity)`; hybrid
        weights (by magnitude) to `sparsity`. Then the criterion may update the weights that stay."""
        views = {
            name: (M.as_out_in(mod, M.whole_original_weight(mod)), M.as_out_in(mod, M.get_mask(mod)))
            for name, mod in self.layers.items()
        }
        if self.pattern.kind == "structured":
            new = structured_masks(views, self.blocks, *self.group_fractions(sparsity))
        elif self.pattern.kind == "hybrid":
            new = hybrid_masks(views, self.blocks, *self.group_fractions(sparsity), sparsity)
        elif self.config.scope == "global":
            new = global_masks(self.criterion.scores(views), {n: m for n, (_, m) in views.items()}, sparsity,
                               self.pattern)
        else:  # one layer's scores at a time: the extra memory of an update is one layer's
            new = {n: layer_mask(self.criterion.scores({n: v})[n], v[1], sparsity, self.pattern)
                   for n, v in views.items()}
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        for name, module in self.layers.items():
            mask = M.from_out_in(module, new[name])
            if distributed:
                # identical masks on every rank: rank 0 decides, the others follow
                mask = mask.to(torch.uint8)
                dist.broadcast(mask, src=0)
            M.set_mask(module, mask.bool())
        if self.criterion is not None:
            if self.criterion.changes_weights():
                self._update_weights(views, distributed)
            self.criterion.reset()

    def _update_weights(self, views: dict[str, tuple[torch.Tensor, torch.Tensor]], distributed: bool) -> None:
        # one layer at a time, so the extra memory is one layer's, not the model's
        for name, module in self.layers.items():
            weight, old_mask = views[name]
            keep = M.as_out_in(module, M.get_mask(module))
            if torch.equal(keep, old_mask):
                continue  # nothing newly pruned: the update would leave every weight where it is
            new = self.criterion.updated_weight(name, weight * old_mask, keep)
            if new is None:
                continue
            sharded = M.is_sharded(module)  # a sharded weight takes its shard of rank 0's
            M.set_original_weight(module, M.from_out_in(module, new))
            if distributed and not sharded:  # rank 0's update wins, as its masks do: the processes stay identical
                dist.broadcast(M.original_weight(module).data, src=0)

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

    def bind(self, model: nn.Module) -> None:
        """Follow the pruned layers into `model`, a copy of this pruner's model (same module names):
        the sharded copy FSDP trains, and back. The criterion is rebuilt on the new layers."""
        if self.criterion is not None:
            self.criterion.close()
        self.model = model
        self.layers = {name: model.get_submodule(name) for name in self.layers}
        if self.blocks:
            self.blocks = find_blocks(model, self.layers)
        if self.criterion is not None:
            self.criterion = make_criterion(self.config, self.layers)

    # --- report -------------------------------------------------------------------------------
    def _keep(self, module: nn.Module) -> torch.Tensor:
        # after finalize() the masks are folded: the zeros themselves are the pattern
        return M.get_mask(module) if M.has_mask(module) else module.weight != 0

    def layer_sparsity(self) -> dict[str, float]:
        return {name: 1.0 - self._keep(mod).float().mean().item() for name, mod in self.layers.items()}

    def overall_sparsity(self) -> float:
        zeros = sum((~self._keep(mod)).sum().item() for mod in self.layers.values())
        total = sum(self._keep(mod).numel() for mod in self.layers.values())
        return zeros / total if total else 0.0

    def finalize(self) -> nn.Module:
        """Fold every mask into its weight and remove the criterion's hooks; the model is a plain
        transformers model again."""
        if self.criterion is not None:
            self.criterion.close()
        for module in self.layers.values():
            M.fold_mask(module)
        return self.model
