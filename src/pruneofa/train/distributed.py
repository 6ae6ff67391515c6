"""The few collective operations the stages need outside (and before) the training loop.

Under `torchrun` / `accelerate launch` every process runs the whole stage: each loads the model
and the corpus and validates its inputs (all of them read the same files, so all agree), but
only the main process (rank 0) writes the output directory, TensorBoard, checkpoints and the
final model; the others wait at a barrier. accelerate's `PartialState` is a singleton that
`Accelerator` later reuses, so creating it early (before `fit`) is fine and sets up the process
group (gloo on CPU, NCCL on GPU) when launched with several processes. A single plain `python`
process needs no process group and pays nothing.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import torch
from accelerate import Accelerator

from pruneofa.errors import UserError

T = TypeVar("T")


def launched_distributed() -> bool:
    """True under torchrun / accelerate launch with more than one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def use_cpu() -> bool:
    """Whether accelerate must be told `cpu=True`: no GPU, or `accelerate launch --cpu`.

    Without it accelerate does not recognise a multi-process CPU launch: under torchrun it reports
    one process, never wraps the model in DDP, and every rank would train on its own.
    """
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return True
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return not accelerator.is_available()
    return not torch.cuda.is_available()


def _state():
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())


def world_size() -> int:
    return _state().num_processes if launched_distributed() else 1


def is_main_process() -> bool:
    return _state().is_main_process if launched_distributed() else True


def barrier() -> None:
    if launched_distributed():
        _state().wait_for_everyone()


def _broadcast_text(text: str | None) -> str | None:
    """Rank 0's `text` on every process (None stays None). Plain tensors: no pickle on the wire."""
    device = _state().device
    data = torch.tensor(list((text or "").encode()), dtype=torch.uint8)
    size = torch.tensor([-1 if text is None else len(data)], dtype=torch.long, device=device)
    torch.distributed.broadcast(size, src=0)
    n = int(size.item())
    if n < 0:
        return None
    buffer = data.to(device) if is_main_process() else torch.empty(n, dtype=torch.uint8, device=device)
    if n:
        torch.distributed.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist()).decode()


def on_main(fn: Callable[[], T]) -> T | None:
    """Run `fn` on the main process only, then let everyone continue together.

    A `UserError` on the main process is raised on every process (same problem and fix), so each
    exits with code 2 instead of waiting forever at a barrier; any other error on the main
    process makes the others fail with a pointer to it. Returns `fn()` on the main process,
    None elsewhere.
    """
    if not launched_distributed():
        return fn()
    result, message = None, None
    if is_main_process():
        try:
            result = fn()
        except UserError as err:
            message = f"U{err.problem}\0{err.fix or ''}"
            _broadcast_text(message)
            raise
        except BaseException as err:
            _broadcast_text(f"X{type(err).__name__}: {err}")
            raise
        _broadcast_text(None)
        return result
    message = _broadcast_text(None)
    if message is None:
        return None
    if message.startswith("U"):
        problem, _, fix = message[1:].partition("\0")
        raise UserError(problem, fix or None)
    raise RuntimeError(f"the main process failed ({message[1:]})")


UNSUPPORTED_FIX = ("to shard, set train.sharding=fsdp (FSDP2) and launch with torchrun or accelerate launch --multi_gpu "
                   "(also on CPU), without --use_fsdp/--use_deepspeed")


def refuse_sharded_launch() -> None:
    """accelerate's FSDP, DeepSpeed and Megatron-LM launches are refused (exit 2) before anything is written.

    Their wrappers would shard the model behind the loop's back (the masks, the mask updates and
    the name-keyed checkpoints need to know); the loop shards itself with FSDP2 when the recipe
    says `train.sharding=fsdp` (`train.sharding`). Plain DDP is the default.
    """
    for flag, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"),
                       ("ACCELERATE_USE_MEGATRON_LM", "Megatron-LM")):
        if os.environ.get(flag, "").lower() in ("1", "true", "yes"):
            raise UserError(f"accelerate's {name} launch is not supported by the pruning loop (it would shard "
                            "the masked weights behind the loop's back)", UNSUPPORTED_FIX)


def make_accelerator(mixed_precision: str) -> Accelerator:
    """accelerate's state is a per-process singleton fixed by its first Accelerator; a later stage in
    the same process (a pipeline: an fp32 teacher, then a bf16 prune) may want another precision.
    Its mixed-precision half is then reset (accelerate's own tests do the same); the process
    group, in PartialState, is kept."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=use_cpu())


def check_distributed_type(acc: Accelerator) -> None:
    """The same refusal as `refuse_sharded_launch`, for a launch that set the type another way (a config file)."""
    from accelerate.utils import DistributedType

    # NO and the MULTI_* types are plain DDP; these shard or wrap the parameters themselves
    refused = {DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM, DistributedType.XLA}
    if acc.distributed_type in refused:
        raise UserError(f"accelerate's {acc.distributed_type.value} mode is not supported by the pruning loop "
                        "(it would shard the masked weights behind the loop's back)", UNSUPPORTED_FIX)
