"""The two fake-quant modules QAT attaches to a Linear layer.

- `WeightFakeQuant` is a parametrization, registered after the pruning mask when there is one, so
  the layer's weight is `fake_quant(mask * original)`: the mask zeroes first, and zero stays zero.
- `ActivationFakeQuant` quantizes the layer's input; it sits on the layer as `input_quant` and a
  forward pre-hook feeds the input through it (no forward method is replaced).

Everything a checkpoint needs (weight scales, observer ranges) is a registered buffer, so it travels
in `state_dict` and through safetensors.
"""

from __future__ import annotations

import torch
from torch import nn

from pruneofa.quantization.fake_quant import (
    INT8_MAX,
    INT8_MIN,
    UINT8_MAX,
    UINT8_MIN,
    affine_qparams,
    broadcast_scale,
    fake_quantize,
    symmetric_scale,
)


class WeightFakeQuant(nn.Module):
    """Parametrization ŵ = q(w) · s, int8 symmetric, s = max|w| / 127 from the current weight.

    The scale is recomputed at every forward (weights move during training) and kept in the
    `scale` buffer: shape () per tensor, (channels,) per channel along `axis` (0 = output channels of
    nn.Linear's (out, in) weight; 1 for GPT-2's transposed Conv1D)."""

    def __init__(self, weight: torch.Tensor, per_channel: bool, axis: int = 0):
        super().__init__()
        self.per_channel = per_channel
        self.axis = axis
        self.register_buffer("scale", symmetric_scale(weight, per_channel, axis))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the scale is a statistic, not a function gradients flow through
            self.scale.copy_(symmetric_scale(weight, self.per_channel, self.axis))
        return fake_quantize(weight, broadcast_scale(self.scale, weight, self.axis), 0.0, INT8_MIN, INT8_MAX)


class ActivationFakeQuant(nn.Module):
    """uint8 asymmetric fake quantization with an exponential-moving-average min/max observer.

    In training, each batch updates the range before it is quantized:
        min <- m · min + (1 - m) · min(x),   max <- m · max + (1 - m) · max(x)
    (the first batch sets them), then (scale, zero_point) = affine_qparams(min, max).
    In eval the range is frozen. Until it has seen a batch the module passes x through unchanged."""

    def __init__(self, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("observed", torch.tensor(False))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        batch_min, batch_max = x.detach().min().float(), x.detach().max().float()
        if bool(self.observed):
            m = self.momentum
            batch_min = m * self.min_val + (1 - m) * batch_min
            batch_max = m * self.max_val + (1 - m) * batch_max
        self.min_val.copy_(batch_min)
        self.max_val.copy_(batch_max)
        scale, zero_point = affine_qparams(self.min_val, self.max_val)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point)
        self.observed.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.observe(x)
        if not bool(self.observed):
            return x
        return fake_quantize(x, self.scale, self.zero_point.float(), UINT8_MIN, UINT8_MAX)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"


def quantize_input_hook(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: the Linear's input goes through `module.input_quant` first.

    A plain function (not a closure) so that `copy.deepcopy` of the model keeps working."""
    if args:
        return (module.input_quant(args[0]), *args[1:]), kwargs
    if "input" in kwargs:
        return args, {**kwargs, "input": module.input_quant(kwargs["input"])}
    return None
