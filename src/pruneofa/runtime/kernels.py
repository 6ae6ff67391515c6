"""Typed Python calls into the C++ kernels (ctypes). One call = one whole Linear layer:
pack activations, sparse multiply, bias, optional GELU, all inside one OpenMP region."""

from __future__ import annotations

import ctypes
from ctypes import c_float, c_int, c_void_p
from typing import NamedTuple

import torch

from pruneofa.runtime.build import load_library
from pruneofa.runtime.formats import CsrF32, QuadsI8

ACTIVATIONS = {None: 0, "gelu": 1}
LAYOUTS = {"gather": 0, "blocks": 1}
_bound: ctypes.CDLL | None = None


def bind(handle: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the C signatures on a loaded kernel library (ctypes then converts arguments fast and safely)."""
    post = [c_void_p, c_void_p, c_void_p, c_float]  # residual, LayerNorm gamma, beta, eps
    handle.pofa_spmm_f32.argtypes = [c_void_p, c_int, c_int, c_int, c_void_p, c_void_p, c_void_p, c_void_p,
                                     c_int, *post, c_void_p, c_int]
    handle.pofa_spmm_f32.restype = None
    handle.pofa_spmm_i8.argtypes = [c_void_p, c_int, c_int, c_int, c_void_p, c_void_p, c_void_p, c_void_p,
                                    c_void_p, c_void_p, c_int, c_int, *post, c_void_p, c_int]
    handle.pofa_spmm_i8.restype = None
    handle.pofa_has_vnni.restype = c_int
    return handle


def lib() -> ctypes.CDLL:
    """The native kernel library (built on first use)."""
    global _bound
    if _bound is None:
        _bound = bind(load_library())
    return _bound


def has_vnni() -> bool:
    return bool(lib().pofa_has_vnni())


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class AddLayerNorm(NamedTuple):
    """Post-op y = LayerNorm(y + residual): residual [M, N] fp32 contiguous, LayerNorm params [N]."""

    residual: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float


def _post_args(post: AddLayerNorm | None) -> tuple:
    if post is None:
        return (None, None, None, 0.0)
    return (post.residual.data_ptr(), post.weight.data_ptr(), post.bias.data_ptr(), post.eps)


def spmm_f32(x: torch.Tensor, w: CsrF32, bias: torch.Tensor | None, act: str | None, threads: int,
             post: AddLayerNorm | None = None, library: ctypes.CDLL | None = None) -> torch.Tensor:
    """y = act(x @ W^T + bias) [then the post-op] for x [M, K] fp32 contiguous; returns [M, N]."""
    m = x.shape[0]
    y = torch.empty(m, w.n_out, dtype=torch.float32)
    (library or lib()).pofa_spmm_f32(x.data_ptr(), m, w.n_in, w.n_out, w.row_ptr.data_ptr(), w.cols.data_ptr(),
                        w.vals.data_ptr(), _ptr(bias), ACTIVATIONS[act], *_post_args(post), y.data_ptr(), threads)
    return y


def spmm_i8(x: torch.Tensor, w: QuadsI8, bias: torch.Tensor | None, act: str | None, threads: int,
            post: AddLayerNorm | None = None, library: ctypes.CDLL | None = None) -> torch.Tensor:
    """Same with int8 weights and per-token dynamically quantised int8 activations."""
    m = x.shape[0]
    y = torch.empty(m, w.n_out, dtype=torch.float32)
    (library or lib()).pofa_spmm_i8(x.data_ptr(), m, w.n_in, w.n_out, w.quad_ptr.data_ptr(), w.quad_cols.data_ptr(),
                       w.quad_w.data_ptr(), w.w_scale.data_ptr(), w.w_sum.data_ptr(), _ptr(bias),
                       ACTIVATIONS[act], LAYOUTS[w.layout], *_post_args(post), y.data_ptr(), threads)
    return y
