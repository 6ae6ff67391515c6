"""Inference-only drop-ins for `nn.Linear` that run the sparse kernels.

They are swapped into a transformers model as child modules (see `engines.py`); everything
around them (attention, LayerNorm, embeddings) stays PyTorch. Inputs of any leading shape
[..., in_features] are flattened to the kernels' [tokens, in_features].

`fused_act="gelu"` folds BERT's exact GELU into the kernel's epilogue ("gelu_tanh": GPT-2's); the caller
then replaces the model's activation module by `nn.Identity`. `post=kernels.AddLayerNorm(...)` adds a
residual and normalises in the same call (the fused encoder's and decoder's residual connections).
"""

from __future__ import annotations

import torch
from torch import nn

from pruneofa.runtime import kernels
from pruneofa.runtime.formats import pack_csr_f32, pack_quads_i8


def set_child(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where `model.get_submodule(name)` is (setattr on its parent: nothing is patched)."""
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


class _SparseLinearBase(nn.Module):
    def __init__(self, linear: nn.Linear, threads: int, fused_act: str | None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.threads = threads
        self.fused_act = fused_act
        bias = None if linear.bias is None else linear.bias.detach().float().contiguous()
        self.register_buffer("bias", bias)
        weight = linear.weight.detach()
        self.density = float((weight != 0).float().mean())

    def _flat_input(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if x2.dtype != torch.float32 or not x2.is_contiguous():
            x2 = x2.float().contiguous()
        return x2

    def extra_repr(self) -> str:
        act = f", fused_act={self.fused_act}" if self.fused_act else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, density={self.density:.3f}{act}"


class SparseLinear(_SparseLinearBase):
    """fp32 weights in CSR; same numbers as the dense layer up to float summation order."""

    def __init__(self, linear: nn.Linear, threads: int, fused_act: str | None = None):
        super().__init__(linear, threads, fused_act)
        self.csr = pack_csr_f32(linear.weight)

    def forward(self, x: torch.Tensor, post: kernels.AddLayerNorm | None = None) -> torch.Tensor:
        y = kernels.spmm_f32(self._flat_input(x), self.csr, self.bias, self.fused_act, self.threads, post)
        return y.view(*x.shape[:-1], self.out_features)


class SparseInt8Linear(_SparseLinearBase):
    """int8 weights (per output channel) x int8 activations (per token, dynamic), int32 accumulation.
    layout: `formats.pack_quads_i8`'s ("dense": the same scheme on the dense kernel)."""

    def __init__(self, linear: nn.Linear, threads: int, fused_act: str | None = None, layout: str = "auto"):
        super().__init__(linear, threads, fused_act)
        self.quads = pack_quads_i8(linear.weight, layout)

    def forward(self, x: torch.Tensor, post: kernels.AddLayerNorm | None = None) -> torch.Tensor:
        y = kernels.spmm_i8(self._flat_input(x), self.quads, self.bias, self.fused_act, self.threads, post)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layout={self.quads.layout}"
