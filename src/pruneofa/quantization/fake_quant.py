"""Fake quantization: the float value an integer grid gives back, with a straight-through gradient.

Affine quantization with scale s and zero point z onto the integers [q_min, q_max]:

    q  = clamp(round(x / s) + z, q_min, q_max)        (round half to even, as ONNX QuantizeLinear)
    x̂  = (q - z) · s                                   (as ONNX DequantizeLinear)

Weights (Q8BERT): symmetric int8, z = 0, q ∈ [-127, 127], s = max|w| / 127 per tensor or per
output channel. -128 is left out so the grid is symmetric. With z = 0 a zero weight gives q = 0 and
x̂ = 0 exactly, so quantization never undoes pruning.

Activations: asymmetric uint8, q ∈ [0, 255], s = (max - min) / 255, z = round(-min / s), with
[min, max] widened to contain 0 so that 0 (padding, GELU zeros) is represented exactly.

Straight-through estimator: ∂x̂/∂x = 1 where x lies in the representable range
[(q_min - z)·s, (q_max - z)·s] and 0 where x was clipped.
"""

from __future__ import annotations

import torch

INT8_MIN, INT8_MAX = -127, 127  # symmetric weight grid
UINT8_MIN, UINT8_MAX = 0, 255  # activation grid


class _FakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, q_min: int, q_max: int):
        q = torch.clamp(torch.round(x / scale) + zero_point, q_min, q_max)
        inside = (x >= (q_min - zero_point) * scale) & (x <= (q_max - zero_point) * scale)
        ctx.save_for_backward(inside)
        return (q - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | float, q_min: int, q_max: int):
    """x̂ = (clamp(round(x / s) + z, q_min, q_max) - z) · s, gradient passed straight through inside the range.

    `scale` and `zero_point` broadcast against `x` (0-d for per-tensor, shaped for per-channel)."""
    zero_point = torch.as_tensor(zero_point, dtype=x.dtype, device=x.device)
    return _FakeQuantize.apply(x, scale.to(x.dtype), zero_point, q_min, q_max)


def symmetric_scale(weight: torch.Tensor, per_channel: bool, axis: int = 0) -> torch.Tensor:
    """s = max|w| / 127, over the whole tensor (0-d result) or per slice along `axis` (1-d result).

    An all-zero tensor or slice gets s = 1: any positive scale maps it to q = 0."""
    w = weight.detach().abs()
    if per_channel:
        dims = [d for d in range(w.dim()) if d != axis]
        max_abs = w.amax(dim=dims) if dims else w
    else:
        max_abs = w.max()
    scale = max_abs.float() / INT8_MAX
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def broadcast_scale(scale: torch.Tensor, weight: torch.Tensor, axis: int) -> torch.Tensor:
    """Shape a per-channel scale (C,) so that it broadcasts along `axis` of `weight`."""
    if scale.dim() == 0:
        return scale
    shape = [1] * weight.dim()
    shape[axis] = -1
    return scale.reshape(shape)


def quantize_symmetric(weight: torch.Tensor, scale: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """The int8 tensor q = clamp(round(w / s), -127, 127) of the symmetric weight grid."""
    s = broadcast_scale(scale, weight, axis)
    return torch.clamp(torch.round(weight.detach().float() / s), INT8_MIN, INT8_MAX).to(torch.int8)


def dequantize_symmetric(q: torch.Tensor, scale: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """ŵ = q · s, computed exactly as `fake_quantize` does, so the two agree bit for bit."""
    return q.float() * broadcast_scale(scale, q, axis)


def affine_qparams(min_val: torch.Tensor, max_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 scale and zero point for the range [min, max] widened to contain 0:
    s = (max - min) / 255 (1 if the range is empty), z = clamp(round(-min / s), 0, 255)."""
    lo = torch.clamp(min_val.float(), max=0.0)
    hi = torch.clamp(max_val.float(), min=0.0)
    scale = (hi - lo) / (UINT8_MAX - UINT8_MIN)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero_point = torch.clamp(UINT8_MIN - torch.round(lo / scale), UINT8_MIN, UINT8_MAX)
    return scale, zero_point.to(torch.int32)
