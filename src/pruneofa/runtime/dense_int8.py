"""Dense int8 baseline: PyTorch's dynamic quantized Linear (fbgemm), behind one small adapter.

`torch.ao.quantization` eager mode is deprecated upstream (torchao is the successor, but it has
no stable CPU dynamic-int8 Linear we can rely on), so nothing else in pruneofa touches it: if it
goes away, only this file changes. Weights per output channel (as the sparse int8 kernel),
activations per tensor (fbgemm's dynamic scheme).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def dynamic_int8_linear(linear: nn.Linear) -> nn.Module:
    """A dynamically quantised copy of `linear` (the original is left untouched)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager-mode deprecation notice
        float_linear = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        float_linear.weight = nn.Parameter(linear.weight.detach().float(), requires_grad=False)
        if linear.bias is not None:
            float_linear.bias = nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        float_linear.qconfig = per_channel_dynamic_qconfig
        return DynamicQuantLinear.from_float(float_linear)


def int8_backend_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines or "x86" in torch.backends.quantized.supported_engines
