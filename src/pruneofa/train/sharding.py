"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for the training loop: `train.sharding=fsdp`.

What is sharded: every transformer block (the classes transformers names in the model's
`_no_split_modules`, the unit it also never splits across devices) is one FSDP unit, the rest
(embeddings, LM head) is the root's. Each process keeps 1/W of every weight, gradient and AdamW
moment; a unit's weights are all-gathered for its forward and backward only.

The masks are not sharded: they stay whole buffers of the mask parametrization on every process
(FSDP2 shards parameters, not buffers), so the forward of a gathered unit is `mask * weight` as
without FSDP. A mask update gathers each pruned weight whole (`masks.whole_original_weight`),
computes the masks from the whole matrices on every process and keeps rank 0's (see
docs/distributed.md).

The loop trains a sharded *copy* of the job's model and, at the end, loads the trained state back
into the job's own model on every process, so the stage after `fit` sees a plain transformers
model as without FSDP. Checkpoints hold the same files as without FSDP: the full state, gathered
on rank 0 (`torch.distributed.checkpoint.state_dict`), and a resume loads it back into the shards.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)  # gathered to rank 0's CPU; {} elsewhere
EVERYWHERE = StateDictOptions(full_state_dict=True)


def units(model: nn.Module) -> list[nn.Module]:
    """The submodules sharded as units of their own: the model's `_no_split_modules` blocks, except
    one that holds a tied weight (BERT's embeddings share theirs with the LM head, and a tied pair
    must be in one unit: they stay the root's)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    tied = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings())
            if m is not None for p in m.parameters()} if hasattr(model, "get_input_embeddings") else set()
    return [m for m in model.modules() if type(m).__name__ in names and m is not model
            and not any(id(p) in tied for p in m.parameters())]


def sharded_copy(model: nn.Module) -> nn.Module:
    """A copy of `model`, sharded over the process group (moved to its device), holding rank 0's weights."""
    sharded = copy.deepcopy(model)
    for module in units(sharded):
        fully_shard(module)
    fully_shard(sharded)
    # every process built its model from the same files, but a fresh head's init or an earlier fit
    # could differ: rank 0's weights win, as DDP's broadcast at wrapping makes them
    state = model.state_dict() if torch.distributed.get_rank() == 0 else {}
    set_model_state_dict(sharded, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return sharded


def gradient_sync(model: nn.Module, enabled: bool) -> None:
    """FSDP2's no_sync: skip the reduce-scatter on micro-batches before the last of an update."""
    model.set_requires_gradient_sync(enabled)


def full_state_on_rank0(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict (parameters and buffers) on rank 0's CPU; {} on the others. Collective.
    A tied weight appears once, under its first name, as `save_pretrained` would write it."""
    state = get_model_state_dict(model, options=ON_RANK0)
    first: dict[int, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if first.setdefault(id(tensor), name) != name:
            state.pop(name, None)
    return state


def load_full_state(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load a whole state dict (every process holds it) into the shards."""
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=strict))


def copy_back(sharded: nn.Module, plain: nn.Module) -> None:
    """Load the sharded model's trained state into `plain` on every process. Collective."""
    state = get_model_state_dict(sharded, options=EVERYWHERE)
    devices = {k: v.device for k, v in plain.state_dict().items()}
    plain.load_state_dict({k: v.to(devices[k]) for k, v in state.items()}, strict=True)


def full_optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """AdamW's whole state as `checkpoint.optimizer_tensors` writes it (tensors `name::key` and the
    param groups with parameter names), gathered on rank 0; empty on the others. Collective."""
    full = get_optimizer_state_dict(model, optimizer, options=ON_RANK0)
    tensors = {f"{name}::{key}": value if torch.is_tensor(value) else torch.tensor(value)
               for name, state in full.get("state", {}).items() for key, value in state.items()}
    return tensors, {"param_groups": full.get("param_groups", [])}


def load_full_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        meta: dict[str, Any]) -> None:
    """Load the files `full_optimizer_tensors` wrote (every process reads them) into the sharded AdamW."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        name, field = key.split("::", 1)
        state.setdefault(name, {})[field] = value
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": meta["param_groups"]},
                             options=EVERYWHERE)
