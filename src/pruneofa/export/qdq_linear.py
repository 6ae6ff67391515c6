"""`QDQLinear`: the export-time stand-in for a QAT Linear layer.

    y = DQ(Q(x; s_x, z_x)) @ DQ(Wᵀ_int8; s_w) + b

The int8 weight is stored transposed, (in, out), so that DequantizeLinear feeds MatMul directly:
onnxruntime fuses exactly that DQ -> MatMul pattern into an integer matmul. Per-channel weight
scales then lie along axis 1. Bias stays float.
"""

from __future__ import annotations

import torch
from torch import nn

from pruneofa.export import onnx_ops


class QDQLinear(nn.Module):
    def __init__(self, weight_int8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
                 input_scale: float | None, input_zero_point: int | None):
        """weight_int8: (out, in) as nn.Linear; weight_scale: () or (out,); input_*: None = float input."""
        super().__init__()
        self.register_buffer("weight_int8_t", weight_int8.t().contiguous())
        self.register_buffer("weight_scale", weight_scale.float().clone())
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self.input_scale = input_scale
        self.input_zero_point = input_zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = onnx_ops.qdq_uint8(x, self.input_scale, self.input_zero_point)
        y = torch.matmul(x, onnx_ops.dequantize_int8(self.weight_int8_t, self.weight_scale, 1))
        return y + self.bias if self.bias is not None else y
