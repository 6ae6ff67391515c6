"""8-bit quantization-aware training (Q8BERT style) that keeps the sparsity pattern exactly.

- `prepare_qat(model, QuantConfig())`: int8 symmetric fake-quant weights, uint8 EMA-observed inputs.
- `calibrate(model, batches)`: observer ranges without training (static PTQ or a warm start).
- `strip_qat`, `quantization_state`, `quantized_weights`: back to float, inspect, export.
- `save_qat`: checkpoints that keep the scales and observer ranges (`pruneofa.modeldir.load_qat` reads them).
"""

from pruneofa.quantization.checkpoint import save_qat
from pruneofa.quantization.config import QuantConfig
from pruneofa.quantization.qat import (
    calibrate,
    is_qat,
    prepare_qat,
    qat_layers,
    quantization_state,
    quantized_weights,
    strip_qat,
)

__all__ = [
    "QuantConfig",
    "calibrate",
    "is_qat",
    "prepare_qat",
    "qat_layers",
    "quantization_state",
    "quantized_weights",
    "save_qat",
    "strip_qat",
]
