"""One projection of a fused encoder layer, whatever runs it: y = post(act(x W^T + b)).

`act` is "gelu" or None; the post-op is `LayerNorm(y + residual)` or None. The sparse ops do both
inside the C++ call, and also accept/produce feature-major activations (`tokens=`,
`out_feature_major=`, see `kernels.spmm_f32`); the dense ops (MKL fp32, fbgemm int8) work
token-major and do act and post-op with PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pruneofa.runtime import kernels
from pruneofa.runtime.formats import CsrF32, QuadsI8, concat_csr, concat_quads
from pruneofa.runtime.kernels import AddLayerNorm
from pruneofa.runtime.layers import SparseInt8Linear, SparseLinear


class SparseF32Op:
    def __init__(self, csr: CsrF32, bias: torch.Tensor | None, act: str | None, threads: int):
        self.csr, self.bias, self.act, self.threads = csr, bias, act, threads
        self.n_out = csr.n_out

    def __call__(self, x: torch.Tensor, post: AddLayerNorm | None = None, **layout) -> torch.Tensor:
        return kernels.spmm_f32(x, self.csr, self.bias, self.act, self.threads, post, **layout)


class SparseI8Op:
    def __init__(self, quads: QuadsI8, bias: torch.Tensor | None, act: str | None, threads: int):
        self.quads, self.bias, self.act, self.threads = quads, bias, act, threads
        self.n_out = quads.n_out

    def __call__(self, x: torch.Tensor, post: AddLayerNorm | None = None, **layout) -> torch.Tensor:
        return kernels.spmm_i8(x, self.quads, self.bias, self.act, self.threads, post, **layout)


class TorchOp:
    """Any dense module (nn.Linear, dynamic int8 Linear) followed by the activation and post-op in PyTorch."""

    def __init__(self, module: nn.Module | None, act: nn.Module | None, n_out: int,
                 weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        self.module, self.act, self.n_out = module, act, n_out
        self.weight_t = None if weight is None else weight.detach().t()  # fused Q/K/V as one addmm
        self.bias = None if bias is None else bias.detach()

    def __call__(self, x: torch.Tensor, post: AddLayerNorm | None = None) -> torch.Tensor:
        if self.weight_t is not None:
            y = torch.addmm(self.bias, x, self.weight_t) if self.bias is not None else x @ self.weight_t
        else:
            y = self.module(x)
        if self.act is not None:
            y = self.act(y)
        if post is not None:
            y = F.layer_norm(y + post.residual, (y.shape[-1],), post.weight, post.bias, post.eps)
        return y


def op_for(module: nn.Module, act_after: nn.Module | None) -> SparseF32Op | SparseI8Op | TorchOp:
    """The op for one (possibly converted) Linear; `act_after` is the activation module that follows
    it in the model (nn.Identity if the conversion already fused it)."""
    if isinstance(act_after, nn.Identity):
        act_after = None
    if act_after is None and isinstance(module, SparseLinear):
        return SparseF32Op(module.csr, module.bias, module.fused_act, module.threads)
    if act_after is None and isinstance(module, SparseInt8Linear):
        return SparseI8Op(module.quads, module.bias, module.fused_act, module.threads)
    return TorchOp(module, act_after, module.out_features)  # incl. a sparse layer + an unfused activation


def fused_op(modules: list[nn.Module]) -> SparseF32Op | SparseI8Op | TorchOp | None:
    """One op computing several projections of the same input side by side (Q, K, V), or None if
    they do not share one implementation."""
    if all(isinstance(m, SparseLinear) for m in modules):
        return SparseF32Op(concat_csr([m.csr for m in modules]), _cat_bias(modules), None, modules[0].threads)
    if all(isinstance(m, SparseInt8Linear) for m in modules):  # layouts may differ: concat_quads unifies them
        return SparseI8Op(concat_quads([m.quads for m in modules]), _cat_bias(modules), None, modules[0].threads)
    if all(type(m) is nn.Linear for m in modules):
        weight = torch.cat([m.weight.detach() for m in modules])
        return TorchOp(None, None, weight.shape[0], weight, _cat_bias(modules))
    return None


def _cat_bias(modules: list[nn.Module]) -> torch.Tensor | None:
    biases = [m.bias for m in modules]
    if all(b is None for b in biases):
        return None
    return torch.cat([
        (b.detach().float() if b is not None else torch.zeros(m.out_features)) for m, b in zip(modules, biases)
    ]).contiguous()
