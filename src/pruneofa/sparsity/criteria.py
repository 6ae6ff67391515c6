"""Pruning criteria: *which* weights matter, apart from the pattern (what shape) and the schedule (when).

A criterion turns every selected layer into an importance matrix (higher = keep) in the (out, in)
view; the pattern (`sparsity.patterns`) then picks the mask from it. Recipes choose one with
`pruning.criterion`:

- ``magnitude`` (default): score = |w|, the paper's gradual magnitude pruning.
- ``obs``: the Optimal BERT Surgeon (Kurtic et al. 2022): score = w^2 / (2 [F^-1]_ii) with F the
  block-diagonal empirical Fisher of the last m gradients, and optionally the OBS update of the
  weights that stay (math in `sparsity.obs`).
- ``wanda`` (Sun et al. 2023): score_ij = |W_ij| * ||X_j||_2, ||X_j|| the L2 norm of input feature
  j over the tokens the layer saw in training mode since the last mask update.
  With ``pruning.reconstruct`` the survivors are then moved to make up for the pruned weights on
  those inputs (SparseGPT's update, Frantar & Alistarh 2023; math in `sparsity.hessian`).

All three score single weights, so they combine with unstructured, block:RxC (tile = mean score)
and nm:N:M patterns; the structured/hybrid groups keep their own L2-norm criterion
(`PruningConfig` refuses another criterion with them).

Adding a criterion is one `Criterion` subclass (at least `scores`) and one line in `CRITERIA`.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch import nn

from pruneofa.sparsity import hessian
from pruneofa.sparsity import masks as M
from pruneofa.sparsity.obs import layer_scores, layer_update

log = logging.getLogger(__name__)

Views = dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer -> ((out, in) stored weight, (out, in) bool keep-mask)


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|w| in fp32: the importance of gradual magnitude pruning."""
    return weight.abs().float()


class Criterion:
    """What the Pruner asks of a criterion. The defaults observe nothing and change no weight.

    `config` is the `PruningConfig` (untyped here: sparsity.config imports this registry, not the reverse)."""

    needs_gradients = False  # whether Pruner.observe_gradients has anything to do

    def __init__(self, config, layers: dict[str, nn.Module]):
        self.config, self.layers = config, layers
        self._logged: set[str] = set()

    def scores(self, views: Views) -> dict[str, torch.Tensor]:
        """(out, in) importance of every layer in `views` (pruned entries are masked by the pattern)."""
        raise NotImplementedError

    def observe_gradients(self) -> None:
        """Record the gradients now on the weights (called only in the steps before a mask update)."""

    def changes_weights(self) -> bool:
        """Whether `updated_weight` has anything to do at this update (the same answer on every rank)."""
        return False

    def updated_weight(self, name: str, weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | None:
        """The new (out, in) effective weight of layer `name` under its new keep-mask, or None to leave it."""
        return None

    def observe_inputs(self, on: bool) -> None:
        """Whether the coming forwards count (criteria that observe the layers' inputs)."""

    def reset(self) -> None:
        """Forget what was observed: called after every mask update."""

    def close(self) -> None:
        """Remove hooks and buffers (Pruner.finalize)."""

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.info(message, *args)


class Magnitude(Criterion):
    def scores(self, views: Views) -> dict[str, torch.Tensor]:
        return {name: magnitude_scores(weight) for name, (weight, _) in views.items()}


class OBS(Criterion):
    """Second-order scores from the gradients of the m updates that end at a mask update.

    Pruner.observe_gradients (training loop: after the backward and the clipping, before
    optimizer.step) stores each layer's masked gradient `original.grad` (= mask * dL/dw_eff, already
    averaged over micro-batches and, under DDP, over processes) in an (m, out * in) fp32 buffer.

    Memory: m x (prunable weights) x 4 bytes on the weights' device, held only from the first step of
    an observation window to its mask update, then freed (BERT-Base: 85M prunable weights, m = 16:
    5.4 GB). Computing F^-1 at the update adds at most `obs.CHUNK_FLOATS` floats (x3 for the update).

    Gradients are read as the loop leaves them before optimizer.step: with fp16 and no clipping
    they are still multiplied by the loss scale S, which acts as a dampening of lambda / S^2.

    The buffer is not checkpointed: a run resumed inside a window builds that one update's Fisher
    from the gradients seen since the resume (m' < m, F = lambda I + (1/m') sum over those); with
    none at all (the update at step 0, or a loop that never calls observe_gradients) the update
    falls back to magnitude, logged once.
    """

    needs_gradients = True

    def __init__(self, config, layers: dict[str, nn.Module]):
        super().__init__(config, layers)
        self.reset()

    def reset(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}  # layer -> (m, out * in) ring buffer
        self.seen: dict[str, int] = {}  # layer -> gradients written since the last update
        self.observed = 0  # steps observed since the last update

    def close(self) -> None:
        self.reset()

    @torch.no_grad()
    def observe_gradients(self) -> None:
        m = self.config.obs_num_grads
        for name, module in self.layers.items():
            grad = M.original_weight(module).grad
            if grad is None:  # the layer took no part in this loss (e.g. a pooler under MLM)
                continue
            flat = M.as_out_in(module, grad).reshape(-1)
            if name not in self.grads:
                self.grads[name] = torch.zeros(m, flat.numel(), dtype=torch.float32, device=flat.device)
            seen = self.seen.get(name, 0)
            self.grads[name][seen % m].copy_(flat)
            self.seen[name] = seen + 1
        self.observed += 1

    def _layer_grads(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        # the buffer is cleared at every mask update, so its gradients all saw the current mask and
        # are zero on pruned entries; a layer without any gives F = lambda I (scores lambda w^2 / 2)
        if name not in self.grads:
            return weight.new_zeros(0, weight.numel(), dtype=torch.float32)
        return self.grads[name][: min(self.seen[name], self.config.obs_num_grads)]

    def _fallback(self) -> bool:
        if self.observed == 0:
            self._log_once("fallback", "criterion obs: no gradient observed before this mask update "
                           "(step 0, or observe_gradients not called): magnitude scores for it")
        return self.observed == 0

    def scores(self, views: Views) -> dict[str, torch.Tensor]:
        if self._fallback():
            return Magnitude.scores(self, views)
        log.debug("criterion obs: scores from the gradients of %d steps", self.observed)
        c = self.config
        return {name: layer_scores(weight * mask, self._layer_grads(name, weight), c.obs_block_size, c.obs_damp)
                for name, (weight, mask) in views.items()}

    def changes_weights(self) -> bool:
        return self.config.obs_update_weights and self.observed > 0

    def updated_weight(self, name: str, weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | None:
        if not self.changes_weights():
            return None
        c = self.config
        return layer_update(weight, self._layer_grads(name, weight), keep, c.obs_block_size, c.obs_damp)


class Wanda(Criterion):
    """score_ij = |W_ij| * ||X_j||_2 (Sun et al. 2023), with Sum x_j^2 summed by forward pre-hooks on
    the pruned layers: one in_features vector per layer.

    Only forwards in training mode count (evaluation batches do not), all tokens of the batch
    (padding included), since the last mask update, and only while `observing` (the Pruner narrows
    that to the `pruning.calibration_steps` before each update; all if unset). Under DDP the sums of
    every process are added up before scoring. A layer that saw no token (every layer, at the update
    at step 0) falls back to magnitude, logged once.

    With `pruning.reconstruct` it sums the whole X^T X instead (its diagonal is Sum x_j^2, so the
    scores are the same) and after each mask update moves the survivors to make up for the pruned
    weights on those inputs (SparseGPT's update, `sparsity.hessian`). Memory: one in x in fp32 matrix
    per layer (BERT-Base: 47 MB). Cost: 2 x tokens x in^2 flops per layer and observed forward.

    The sums are not checkpointed: a run resumed between two updates scores (and reconstructs) the
    next one from the forwards counted since the resume.
    """

    def __init__(self, config, layers: dict[str, nn.Module]):
        super().__init__(config, layers)
        self.observing = True
        self.reset()
        self.handles = [module.register_forward_pre_hook(self._hook(name)) for name, module in layers.items()]

    def observe_inputs(self, on: bool) -> None:
        self.observing = on

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}  # layer -> Sum x_j^2 (in,), or X^T X (in, in) to reconstruct
        self.tokens: dict[str, int] = {}
        self.totals: dict[str, tuple[torch.Tensor, float]] = {}  # layer -> (sum, tokens) over every process

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.reset()

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        """What inputs x (tokens, in) add to the layer's sum, in fp32 whatever autocast would do: a bf16 X^T X
        is not positive definite enough for the reconstruction's Cholesky factor."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            return x.T @ x if self.config.reconstruct else torch.linalg.vector_norm(x, dim=0).square()

    def _hook(self, name: str):
        @torch.no_grad()
        def hook(module: nn.Module, args: tuple) -> None:
            if not module.training or not self.observing or not args:
                return
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            stat = self.statistic(x)
            self.sums[name] = self.sums[name] + stat if name in self.sums else stat
            self.tokens[name] = self.tokens.get(name, 0) + x.shape[0]
        return hook

    def gathered(self, views: Views) -> dict[str, tuple[torch.Tensor, float]]:
        """Per layer (sum, tokens) over every process (each rank calls update_masks in the same order).

        Gathered once per update: the scores and then the weight update of a layer read the same
        totals, so under DDP each sum crosses the processes once."""
        missing = {n: v for n, v in views.items() if n not in self.totals}
        if missing:
            self.totals.update(self._all_reduced(missing))
        return {n: self.totals[n] for n in views}

    def _all_reduced(self, views: Views) -> dict[str, tuple[torch.Tensor, float]]:
        def zeros(w: torch.Tensor) -> torch.Tensor:  # a layer this process saw no token of
            n_in = w.shape[1]
            return torch.zeros((n_in, n_in) if self.config.reconstruct else (n_in,), device=w.device)

        sums = {n: self.sums.pop(n).to(w.device) if n in self.sums else zeros(w) for n, (w, _) in views.items()}
        tokens = [float(self.tokens.get(n, 0)) for n in sums]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = next(iter(sums.values())).device
            packed = torch.cat([s.to(device).reshape(-1) for s in sums.values()] + [torch.tensor(tokens, device=device)])
            dist.all_reduce(packed)
            parts = packed.split([s.numel() for s in sums.values()] + [len(sums)])
            sums = {n: p.view_as(sums[n]).to(sums[n].device) for n, p in zip(sums, parts)}
            tokens = parts[-1].tolist()
        return {n: (s, count) for (n, s), count in zip(sums.items(), tokens)}

    def scores(self, views: Views) -> dict[str, torch.Tensor]:
        out = {}
        for name, (total, tokens) in self.gathered(views).items():
            weight = views[name][0]
            if tokens == 0:
                self._log_once("fallback", "criterion wanda: %s (and every layer at step 0) saw no token in training "
                               "mode before this mask update: magnitude scores for it", name)
                out[name] = magnitude_scores(weight)
            else:
                log.debug("criterion wanda: scores of %s from %d tokens", name, tokens)
                squares = total.diagonal() if self.config.reconstruct else total
                out[name] = magnitude_scores(weight) * squares.sqrt()[None, :]
        return out

    def changes_weights(self) -> bool:
        # a layer without inputs on any rank returns None from updated_weight (the sums are gathered first)
        return self.config.reconstruct

    def updated_weight(self, name: str, weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | None:
        gram, tokens = self.gathered({name: (weight, keep)})[name]
        if tokens == 0:
            return None
        return hessian.reconstruct(weight, gram, keep, self.config.reconstruct_damp)


CRITERIA: dict[str, type[Criterion]] = {"magnitude": Magnitude, "obs": OBS, "wanda": Wanda}


def make_criterion(config, layers: dict[str, nn.Module]) -> Criterion:
    return CRITERIA[config.criterion](config, layers)
