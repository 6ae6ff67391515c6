"""Run a whole BERT encoder in one C++ call (`pofa_encoder`): all layers, all matmuls, attention,
GELU and LayerNorms inside one OpenMP region, activations feature-major throughout.

This removes what is left of Python per layer (~0.1 ms a layer on this CPU, measured: more than
the int8 matmuls of a 384-wide layer) and the OpenMP fork/join per op. It applies when every
layer's four projections run the same sparse kernel (all fp32 CSR or all int8 quads); the
per-layer Python path in `fused_encoder.py` covers the rest.
"""

from __future__ import annotations

import ctypes
from ctypes import c_float, c_int, c_void_p

import torch

from pruneofa.runtime import kernels
from pruneofa.runtime.ops import SparseF32Op, SparseI8Op


class MatrixDesc(ctypes.Structure):
    _fields_ = [("kind", c_int), ("n_in", c_int), ("n_out", c_int), ("ptr", c_void_p), ("cols", c_void_p),
                ("vals", c_void_p), ("w_scale", c_void_p), ("w_sum", c_void_p), ("layout", c_int), ("bias", c_void_p),
                ("act", c_int)]


class LayerDesc(ctypes.Structure):
    _fields_ = [("qkv", MatrixDesc), ("attn_out", MatrixDesc), ("ffn_in", MatrixDesc), ("ffn_out", MatrixDesc),
                ("ln1_gamma", c_void_p), ("ln1_beta", c_void_p), ("ln1_eps", c_float),
                ("ln2_gamma", c_void_p), ("ln2_beta", c_void_p), ("ln2_eps", c_float),
                ("head_dim", c_int), ("scale", c_float), ("attention_int8", c_int)]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def matrix_desc(op: SparseF32Op | SparseI8Op) -> MatrixDesc:
    act = kernels.ACTIVATIONS[op.act]
    if isinstance(op, SparseF32Op):
        w = op.csr
        return MatrixDesc(0, w.n_in, w.n_out, _ptr(w.row_ptr), _ptr(w.cols), _ptr(w.vals), None, None, 0,
                          _ptr(op.bias), act)
    q = op.quads
    return MatrixDesc(1, q.n_in, q.n_out, _ptr(q.quad_ptr), _ptr(q.quad_cols), _ptr(q.quad_w), _ptr(q.w_scale),
                      _ptr(q.w_sum), kernels.LAYOUTS[q.layout], _ptr(op.bias), act)


class NativeEncoder:
    """The descriptors of all layers, built once; the tensors they point to are owned by the layers."""

    def __init__(self, layers: list, width: int, threads: int, int8_attention: bool = True):
        """int8_attention: with int8 matmuls, also run the attention products in int8 (VNNI)."""
        self.layers = layers  # keeps every pointed-to tensor alive
        self.width, self.threads = width, threads
        self.int8_attention = int8_attention and isinstance(layers[0].qkv, SparseI8Op) and kernels.has_vnni()
        self.descs = (LayerDesc * len(layers))(*[self._layer_desc(layer) for layer in layers])
        self.lib = kernels.lib()
        self.max_seq = self.lib.pofa_max_seq()  # the longest sequence the C attention takes

    @staticmethod
    def supports(layers: list) -> bool:
        return all(layer.feature_major for layer in layers) and len(
            {type(layer.qkv) for layer in layers}) == 1

    def _layer_desc(self, layer) -> LayerDesc:
        int8_attention = self.int8_attention and layer.head_dim % 4 == 0
        return LayerDesc(matrix_desc(layer.qkv), matrix_desc(layer.out_attn), matrix_desc(layer.ffn_in),
                         matrix_desc(layer.ffn_out), _ptr(layer.ln_attn.weight), _ptr(layer.ln_attn.bias),
                         layer.ln_attn.eps, _ptr(layer.ln_ffn.weight), _ptr(layer.ln_ffn.bias), layer.ln_ffn.eps,
                         layer.head_dim, layer.scaling, int(int8_attention))

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden [B, S, width] fp32 -> the encoder's output, same shape. mask: additive fp32, either per
        key [B, S] (padding) or full key-major [B, S_key, S_query] (`key_major_additive_mask`)."""
        batch, seq, width = hidden.shape
        x = hidden.contiguous()
        y = torch.empty_like(x)
        kind = 0 if mask is None else (1 if mask.dim() == 2 else 2)
        self.lib.pofa_encoder(self.descs, len(self.layers), x.data_ptr(), y.data_ptr(), batch, seq, width,
                              _ptr(mask), kind, self.threads)
        return y


def key_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """A [B, S] 0/1 attention mask -> additive fp32 [B, S] (None if nothing is masked)."""
    if bool(attention_mask.all()):
        return None
    return (1.0 - attention_mask.float()) * torch.finfo(torch.float32).min


def key_major_additive_mask(mask: torch.Tensor | None, batch: int, seq: int) -> torch.Tensor | None:
    """transformers' 4-D attention mask (bool: True = attend, or float additive), [B, 1, S, S] ->
    additive fp32 [B, S_key, S_query] as the C++ attention reads it; None stays None."""
    if mask is None:
        return None
    if mask.shape[1] != 1:
        raise ValueError("per-head attention masks are not supported by the native encoder")
    mask = mask.expand(batch, 1, seq, seq)[:, 0]
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=torch.float32).masked_fill_(~mask, torch.finfo(torch.float32).min)
    return mask.float().transpose(1, 2).contiguous()
