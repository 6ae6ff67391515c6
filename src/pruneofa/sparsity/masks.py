"""Masks as parametrizations: the weight a layer uses is `mask * weight_original`.

Because the mask multiplies the weight inside the forward pass, a pruned weight is exactly zero
in every forward and receives exactly zero gradient, whatever the optimizer does to the stored
original (AdamW's decoupled weight decay, momentum, gradient accumulation, autocast). Saving folds
the mask in (`fold_mask`, `plain_state_dict`: pruned weights +0.0): the state a plain transformers model expects.

GPT-2's `Conv1D` stores its weight as (in, out); `as_out_in` gives every layer the (out, in)
view the patterns work on.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.utils import parametrize

try:  # transformers' Conv1D (GPT-2 family): a Linear with a transposed weight
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a hard dependency
    Conv1D = ()

PRUNABLE_TYPES = (nn.Linear, Conv1D) if Conv1D else (nn.Linear,)


class FakeSparsity(nn.Module):
    """Parametrization holding a 0/1 keep-mask; forward is `mask * weight`.

    The mask is stored in the weight's dtype, as torch.ao.pruning does: a bool mask would save
    memory but the promoting multiply is about 3x slower on CPU (bench/train_overhead.py).
    """

    def __init__(self, mask: torch.Tensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.register_buffer("mask", mask.to(dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.mask * weight


def is_transposed(module: nn.Module) -> bool:
    return bool(Conv1D) and isinstance(module, Conv1D)


def as_out_in(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """View a weight-shaped tensor of `module` as (out_features, in_features)."""
    return tensor.t() if is_transposed(module) else tensor


def from_out_in(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    return tensor.t().contiguous() if is_transposed(module) else tensor


def has_mask(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, FakeSparsity) for p in module.parametrizations.weight
    )


def _fake_sparsity(module: nn.Module) -> FakeSparsity:
    return next(p for p in module.parametrizations.weight if isinstance(p, FakeSparsity))


def attach_mask(module: nn.Module, mask: torch.Tensor | None = None) -> None:
    """Put a mask on `module.weight` (all-ones when None). Idempotent: an existing mask is replaced."""
    if mask is None:
        mask = torch.ones_like(module.weight, dtype=torch.bool)
    if has_mask(module):
        set_mask(module, mask)
        return
    parametrize.register_parametrization(module, "weight", FakeSparsity(mask.to(module.weight.device), module.weight.dtype))


def get_mask(module: nn.Module) -> torch.Tensor:
    """The keep-mask as booleans."""
    return _fake_sparsity(module).mask != 0


def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    _fake_sparsity(module).mask.copy_(mask)


def original_weight(module: nn.Module) -> torch.Tensor:
    """The stored (unmasked) weight; `module.weight` itself is the masked one."""
    return module.parametrizations.weight.original if has_mask(module) else module.weight


def whole_original_weight(module: nn.Module) -> torch.Tensor:
    """`original_weight`, gathered whole when it is sharded (an FSDP2 DTensor outside its unit's
    forward): masks are chosen from whole matrices. Otherwise the stored tensor itself."""
    weight = original_weight(module)
    return weight.full_tensor() if isinstance(weight, DTensor) else weight


def is_sharded(module: nn.Module) -> bool:
    return isinstance(original_weight(module), DTensor)


def set_original_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Overwrite the stored weight with a whole one; when sharded, each process takes its shard of
    rank 0's (so that the processes stay identical)."""
    original = original_weight(module)
    if isinstance(original, DTensor):
        weight = distribute_tensor(weight.to(original.dtype), original.device_mesh, original.placements)
    original.copy_(weight)


MASKED_WEIGHT = ".parametrizations.weight.original"  # where a masked layer keeps its stored `.weight`


def plain_name(parameter_name: str) -> str:
    """A parameter's name in a plain checkpoint: a masked layer's stored weight under `.weight`."""
    if parameter_name.endswith(MASKED_WEIGHT):
        return parameter_name.removesuffix(MASKED_WEIGHT) + ".weight"
    return parameter_name


def fold_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of a masked model (`...parametrizations.weight.original` and `...0.mask`) with the
    masks folded: `where(mask, original, 0)` under the plain `.weight` names. For a state gathered
    from shards, where `plain_state_dict` cannot ask the modules."""
    folded = dict(state)
    for key in [k for k in state if k.endswith(MASKED_WEIGHT)]:
        prefix = key.removesuffix(MASKED_WEIGHT)
        own = [k for k in state if k.startswith(f"{prefix}.parametrizations.weight.") and k != key]
        if [k for k in own if not k.endswith(".mask")] or len(own) != 1:
            raise ValueError(f"{prefix} carries more than a pruning mask; fold it with plain_state_dict")
        mask = folded.pop(own[0]) != 0
        original = folded.pop(key)
        folded[f"{prefix}.weight"] = torch.where(mask, original, torch.zeros_like(original))
    return folded


def masked_weight(module: nn.Module) -> torch.Tensor:
    """The weight the layer uses (after every parametrization on it), pruned entries +0.0:
    where(mask, weight, 0) (the product mask * weight would leave -0.0 for negative pruned weights)."""
    weight = module.weight
    return torch.where(get_mask(module), weight, torch.zeros_like(weight))


@torch.no_grad()
def fold_mask(module: nn.Module) -> None:
    """Remove the parametrization, leaving `masked_weight` as a plain parameter (the one way a mask
    is folded: training's end, saving, export)."""
    if has_mask(module):
        kept = masked_weight(module)
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        module.weight.copy_(kept)


def fold_masks(model: nn.Module) -> nn.Module:
    """`fold_mask` on every masked layer of `model`, in place; returns `model`."""
    for module in masked_modules(model).values():
        fold_mask(module)
    return model


def masked_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if has_mask(m)}


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as if it had no masks: masked weights folded under their plain names."""
    state = model.state_dict()
    for name, module in masked_modules(model).items():
        prefix = f"{name}.parametrizations.weight."
        for key in [k for k in state if k.startswith(prefix)]:
            del state[key]
        state[f"{name}.weight"] = masked_weight(module).detach()
    return state
