"""Two torch custom ops that become ONNX QuantizeLinear/DequantizeLinear in the exported graph.

    pruneofa::qdq_uint8(x, scale, zero_point)   = (clamp(round(x / s) + z, 0, 255) - z) · s
        -> DequantizeLinear(QuantizeLinear(x, s, z), s, z), z uint8
    pruneofa::dequantize_int8(q, scale, axis)   = q · s (s per tensor, or per slice along `axis`)
        -> DequantizeLinear(q, s, axis), q an int8 initializer

In PyTorch they compute the same arithmetic as the QAT fake quantization, so the export model and
the QAT model agree in eager mode. Opaque custom ops keep the exporter from decomposing or
constant-folding them: the int8 weights reach the ONNX file as int8 initializers.
"""

from __future__ import annotations

import onnx
import torch
from onnxscript import opset18 as op

from pruneofa.quantization.fake_quant import UINT8_MAX, UINT8_MIN, broadcast_scale


@torch.library.custom_op("pruneofa::qdq_uint8", mutates_args=())
def qdq_uint8(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    s = torch.tensor(scale, dtype=x.dtype)
    q = torch.clamp(torch.round(x / s) + zero_point, UINT8_MIN, UINT8_MAX)
    return (q - zero_point) * s


@qdq_uint8.register_fake
def _(x, scale, zero_point):
    return torch.empty_like(x)


@torch.library.custom_op("pruneofa::dequantize_int8", mutates_args=())
def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, axis: int) -> torch.Tensor:
    return q.to(torch.float32) * broadcast_scale(scale, q, axis)


@dequantize_int8.register_fake
def _(q, scale, axis):
    return torch.empty(q.shape, dtype=torch.float32, device=q.device)


def _qdq_uint8_onnx(x, scale: float, zero_point: int):
    s = op.Constant(value=onnx.helper.make_tensor("scale", onnx.TensorProto.FLOAT, [], [scale]))
    z = op.Constant(value=onnx.helper.make_tensor("zero_point", onnx.TensorProto.UINT8, [], [zero_point]))
    return op.DequantizeLinear(op.QuantizeLinear(x, s, z), s, z)


def _dequantize_int8_onnx(q, scale, axis: int):
    return op.DequantizeLinear(q, scale, axis=axis)


TRANSLATIONS = {
    torch.ops.pruneofa.qdq_uint8.default: _qdq_uint8_onnx,
    torch.ops.pruneofa.dequantize_int8.default: _dequantize_int8_onnx,
}
