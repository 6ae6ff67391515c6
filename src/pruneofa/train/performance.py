"""What makes the loop fast without changing what it computes: TF32 matmuls on GPUs, fused AdamW
and opt-in `torch.compile` (`train.compile`)."""

from __future__ import annotations

from typing import Any

import torch

COMPILE_BACKEND = "inductor"  # torch.compile's default; the tests trace with "eager" (inductor's C++ build takes minutes on a CPU)


def allow_tf32(device: torch.device) -> None:
    """TF32 matmuls and convolutions on CUDA (Ampere and later: ~8x the fp32 throughput, fp32
    accumulation; under bf16 autocast only the fp32 leftovers are affected). Nothing elsewhere."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # sets torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = True


def adamw(param_groups: list[dict[str, Any]], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with one fused kernel per step on CUDA and CPU; the multi-tensor (foreach) path elsewhere.

    On a CPU the foreach path is a loop of whole-tensor ops, a dozen passes over memory: for the 6x384
    MiniLM's 22.7M parameters on 2 cores it took a quarter of a transfer step (bench/optimizer_step.py)."""
    if device.type in ("cuda", "cpu"):
        return torch.optim.AdamW(param_groups, lr=lr, fused=True)
    return torch.optim.AdamW(param_groups, lr=lr, foreach=True)


def compile_in_place(model: torch.nn.Module) -> None:
    """`torch.compile` the model's forward in place (`nn.Module.compile`): the object, its class,
    attributes and parameter names stay those of the transformers model, so everything that finds
    layers by name (masks, checkpoints, the deferred LM head) works unchanged."""
    model.compile(backend=COMPILE_BACKEND)
