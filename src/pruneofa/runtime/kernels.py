"""Typed Python calls into the C++ kernels (ctypes). One call = one whole Linear layer:
pack activations, sparse multiply, bias, optional GELU, all inside one OpenMP region."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from ctypes import c_float, c_int, c_void_p
from typing import NamedTuple

import torch

from pruneofa.runtime.build import load_library
from pruneofa.runtime.formats import CsrF32, QuadsI8

ACTIVATIONS = {None: 0, "gelu": 1, "gelu_tanh": 2}  # csrc/common.h Activation: erf GELU, tanh GELU
LAYOUTS = {"gather": 0, "blocks": 1, "dense": 2}
_bound: ctypes.CDLL | None = None


def bind(handle: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the C signatures on a loaded kernel library (ctypes then converts arguments fast and safely)."""
    x_args = [c_void_p, c_int, c_int, c_int, c_int, c_int]  # x, x feature-major?, ld_x, M, K, N
    post = [c_void_p, c_void_p, c_void_p, c_float, c_void_p]  # residual, LayerNorm gamma, beta, eps, sum out
    y_args = [c_void_p, c_int, c_int, c_int]  # y, y feature-major?, ld_y, threads
    handle.pofa_spmm_f32.argtypes = [*x_args, c_void_p, c_void_p, c_void_p, c_void_p, c_int, *post, *y_args]
    handle.pofa_spmm_f32.restype = None
    handle.pofa_spmm_i8.argtypes = [*x_args, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_int,
                                    c_int, *post, *y_args]
    handle.pofa_spmm_i8.restype = None
    handle.pofa_encoder.argtypes = [c_void_p, c_int, c_void_p, c_void_p, c_int, c_int, c_int, c_void_p, c_int,
                                    c_int]  # layers, n_layers, x, y, B, S, H, mask, mask kind, threads
    handle.pofa_encoder.restype = None
    handle.pofa_bert_embeddings.argtypes = [c_void_p, c_int, c_void_p, c_int, c_void_p, c_int, c_void_p, c_void_p,
                                            c_float, c_void_p, c_void_p, c_int, c_int, c_int, c_void_p, c_int]
    handle.pofa_bert_embeddings.restype = c_int
    handle.pofa_max_seq.restype = c_int
    handle.pofa_has_vnni.restype = c_int
    handle.pofa_amx.restype = c_int
    handle.pofa_set_amx.argtypes = [c_int]
    handle.pofa_set_amx.restype = c_int
    handle.pofa_tile_sessions.restype = ctypes.c_longlong
    handle.pofa_kernel_isa.restype = ctypes.c_char_p
    return handle


def lib() -> ctypes.CDLL:
    """The native kernel library (built on first use)."""
    global _bound
    if _bound is None:
        _bound = bind(load_library())
    return _bound


def has_vnni() -> bool:
    return bool(lib().pofa_has_vnni())


# kernel sets (csrc/common.h): the build picks one from the CPU it is compiled on (-march=native)
KERNEL_ISAS = ("avx512-vnni", "avx512", "avx2-vnni", "avx2", "portable")
NATIVE_INT8_ISAS = ("avx512-vnni", "avx2-vnni", "avx2")  # SIMD int8 kernels (dense layout included): no fbgemm


def kernel_isa(library: ctypes.CDLL | None = None) -> str:
    """Which kernels run: "avx512-vnni", "avx512" (fp32 AVX-512, int8 portable loops), "avx2-vnni" (AVX2 with
    AVX-VNNI), "avx2" or "portable"."""
    return (library or lib()).pofa_kernel_isa().decode()


def amx_active(library: ctypes.CDLL | None = None) -> bool:
    """Dense int8 layers run on AMX tiles: the CPU and build have AMX-INT8, Linux grants the tile
    state, and neither PRUNEOFA_AMX=0 nor `amx_tiles(False)` turned them off."""
    return bool((library or lib()).pofa_amx())


@contextmanager
def amx_tiles(enabled: bool, library: ctypes.CDLL | None = None) -> Iterator[bool]:
    """Within the block, dense int8 layers use AMX tiles or not (process-wide: for timing one kernel
    beside the other, not for serving from several threads); yields whether tiles are in use."""
    handle = library or lib()
    before = handle.pofa_amx()
    try:
        yield bool(handle.pofa_set_amx(int(enabled)))
    finally:
        handle.pofa_set_amx(before)


def tile_sessions(library: ctypes.CDLL | None = None) -> int:
    """A counter of the (thread, layer) calls that ran on AMX tiles: compare it around a call."""
    return int((library or lib()).pofa_tile_sessions())


def kernel_label(library: ctypes.CDLL | None = None) -> str:
    """The kernel set and, where they run, AMX tiles: e.g. "avx512-vnni+amx" (what `pruneofa bench` reports)."""
    isa = kernel_isa(library)
    return f"{isa}+amx" if amx_active(library) else isa


def has_native_int8() -> bool:
    """The int8 kernels are SIMD (VNNI or AVX2): "sparse-int8" then keeps layers below the break-even on
    the runtime's dense int8 kernel, in the one-call encoder, instead of fbgemm per layer."""
    return kernel_isa() in NATIVE_INT8_ISAS


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class AddLayerNorm(NamedTuple):
    """Post-op y = LayerNorm(y + residual): residual [M, N] fp32 contiguous, LayerNorm params [N].
    sum_out (y's layout, optional) also gets y + residual; it may be the residual itself, which is how a
    pre-LayerNorm block keeps its running sum: h += y, and y comes out as the next LayerNorm of h."""

    residual: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float
    sum_out: torch.Tensor | None = None


def _post_args(post: AddLayerNorm | None) -> tuple:
    if post is None:
        return (None, None, None, 0.0, None)
    return (post.residual.data_ptr(), post.weight.data_ptr(), post.bias.data_ptr(), post.eps, _ptr(post.sum_out))


def feature_major_ld(tokens: int) -> int:
    """Token stride of feature-major activations [features, ld]: tokens rounded up to 64 (one
    int8 vector), so that the int8 kernels can read whole vectors without bounds checks."""
    return (tokens + 63) // 64 * 64


def _layouts(x: torch.Tensor, tokens: int | None, n_in: int, n_out: int, out_feature_major: bool):
    """(x args, y) for a call: x is token-major [M, K] unless `tokens` (M) is given, in which case
    it is feature-major [K, ld]; y likewise token-major [M, N] or feature-major [N, ld]."""
    if tokens is None:
        m, x_fm, ld_x = x.shape[0], 0, 0
    else:
        m, x_fm, ld_x = tokens, 1, x.shape[1]
        if x.shape[0] != n_in or ld_x != feature_major_ld(m) or not x.is_contiguous():
            raise ValueError(f"feature-major input must be contiguous [{n_in}, {feature_major_ld(m)}]")
    if out_feature_major:  # zeros: the int8 kernel leaves the padding columns past round_up(M, 16) as they are
        y = torch.zeros(n_out, feature_major_ld(m), dtype=torch.float32)
        return (x.data_ptr(), x_fm, ld_x, m), y, (y.data_ptr(), 1, y.shape[1])
    y = torch.empty(m, n_out, dtype=torch.float32)
    return (x.data_ptr(), x_fm, ld_x, m), y, (y.data_ptr(), 0, 0)


def spmm_f32(x: torch.Tensor, w: CsrF32, bias: torch.Tensor | None, act: str | None, threads: int,
             post: AddLayerNorm | None = None, *, tokens: int | None = None, out_feature_major: bool = False,
             library: ctypes.CDLL | None = None) -> torch.Tensor:
    """y = act(x W^T + bias) [then the post-op]. x: token-major [M, K] fp32 contiguous, or
    feature-major [K, feature_major_ld(M)] with `tokens=M`; y token-major [M, N] or, with
    out_feature_major, [N, feature_major_ld(M)] (a post-op residual has y's layout)."""
    x_args, y, y_args = _layouts(x, tokens, w.n_in, w.n_out, out_feature_major)
    (library or lib()).pofa_spmm_f32(*x_args, w.n_in, w.n_out, w.row_ptr.data_ptr(), w.cols.data_ptr(),
                                     w.vals.data_ptr(), _ptr(bias), ACTIVATIONS[act], *_post_args(post), *y_args,
                                     threads)
    return y


def spmm_i8(x: torch.Tensor, w: QuadsI8, bias: torch.Tensor | None, act: str | None, threads: int,
            post: AddLayerNorm | None = None, *, tokens: int | None = None, out_feature_major: bool = False,
            library: ctypes.CDLL | None = None) -> torch.Tensor:
    """Same with int8 weights and per-token dynamically quantised int8 activations."""
    x_args, y, y_args = _layouts(x, tokens, w.n_in, w.n_out, out_feature_major)
    (library or lib()).pofa_spmm_i8(*x_args, w.n_in, w.n_out, w.quad_ptr.data_ptr(), w.quad_cols.data_ptr(),
                                    w.quad_w.data_ptr(), w.w_scale.data_ptr(), w.w_sum.data_ptr(), _ptr(bias),
                                    ACTIVATIONS[act], LAYOUTS[w.layout], *_post_args(post), *y_args, threads)
    return y


EMBEDDING_ERRORS = {1: "an input id is outside the vocabulary", 2: "a token type id is outside the type vocabulary",
                    3: "the sequence is longer than the position embeddings"}


def bert_embeddings(word: torch.Tensor, token_type: torch.Tensor, position: torch.Tensor, gamma: torch.Tensor,
                    beta: torch.Tensor, eps: float, ids: torch.Tensor, types: torch.Tensor | None,
                    threads: int) -> torch.Tensor:
    """BertEmbeddings' output for [B, S] ids (absolute positions from 0): LayerNorm(word + type + position) in one
    C call, where PyTorch takes five ops (~80 us a call, a few percent of a sparse int8 forward). The tables are
    fp32 [rows, H] contiguous; an out-of-range id raises IndexError, as nn.Embedding does."""
    ids = ids.to(torch.int64).contiguous()
    types = None if types is None else types.to(torch.int64).contiguous()
    batch, seq = ids.shape
    hidden = word.shape[1]
    y = torch.empty(batch, seq, hidden)
    status = lib().pofa_bert_embeddings(word.data_ptr(), word.shape[0], token_type.data_ptr(), token_type.shape[0],
                                        position.data_ptr(), position.shape[0], gamma.data_ptr(), beta.data_ptr(),
                                        eps, ids.data_ptr(), _ptr(types), batch, seq, hidden, y.data_ptr(), threads)
    if status:
        raise IndexError(EMBEDDING_ERRORS[status])
    return y
