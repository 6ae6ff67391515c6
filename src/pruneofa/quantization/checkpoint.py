"""QAT checkpoints: a plain transformers directory plus the quantization state beside it
(`pruneofa.modeldir.load_qat` reads one back).

    out_dir/config.json, model.safetensors   float weights, masks folded (loadable without pruneofa)
    out_dir/qat_state.safetensors            weight scales and observer ranges, QuantConfig in metadata

Reloading with `modeldir.load_qat` rebuilds the QAT model: the weight fake quantization is a function of the
float weights, so it comes back bit for bit, and the observers get their saved ranges.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from pruneofa.errors import UserError
from pruneofa.quantization.config import QuantConfig
from pruneofa.quantization.modules import WeightFakeQuant
from pruneofa.quantization.qat import (
    own_parametrized_class,
    qat_buffers,
    qat_layers,
    strip_qat,
)
from pruneofa.sparsity import masks as M

QAT_STATE_FILE = "qat_state.safetensors"



def plain_model_copy(model: nn.Module, keep_quantized_values: bool) -> nn.Module:
    """A deep copy with fake quantization removed and masks folded: a plain transformers model."""
    plain = copy.deepcopy(model)
    for module in plain.modules():
        own_parametrized_class(module)  # else stripping the copy would break `model`
    strip_qat(plain, keep_quantized_values=keep_quantized_values)
    return M.fold_masks(plain)


def _layer_config(model: nn.Module) -> dict[str, Any]:
    layers = qat_layers(model)
    if not layers:
        raise UserError("the model has no QAT layers", "call prepare_qat(model) before saving a QAT checkpoint")
    first = next(iter(layers.values()))
    fq = next(p for p in first.parametrizations.weight if isinstance(p, WeightFakeQuant))
    observer = getattr(first, "input_quant", None)
    return {
        "per_channel": fq.per_channel,
        "quantize_activations": observer is not None,
        "activation_momentum": observer.momentum if observer is not None else 0.9,
        # exact names, so that reloading selects the same layers whatever the regexes were
        "include": [f"^{re.escape(name)}$" for name in layers],
        "exclude": [],
    }


def save_qat(model: nn.Module, out_dir: str | Path, tokenizer: Any = None) -> Path:
    """Write a QAT checkpoint (see module docstring). Returns `out_dir`."""
    out = Path(out_dir)
    config = QuantConfig(**_layer_config(model))
    buffers = qat_buffers(model)
    plain = plain_model_copy(model, keep_quantized_values=False)
    plain.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    save_file(buffers, out / QAT_STATE_FILE, metadata={"quant_config": config.model_dump_json()})
    return out
