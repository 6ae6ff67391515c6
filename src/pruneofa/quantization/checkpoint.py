"""QAT checkpoints: a plain transformers directory plus the quantization state beside it.

    out_dir/config.json, model.safetensors   float weights, masks folded (loadable without pruneofa)
    out_dir/qat_state.safetensors            weight scales and observer ranges, QuantConfig in metadata

Reloading with `load_qat` rebuilds the QAT model: the weight fake quantization is a function of the
float weights, so it comes back bit for bit, and the observers get their saved ranges.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pruneofa.errors import UserError
from pruneofa.quantization.config import QuantConfig
from pruneofa.quantization.modules import WeightFakeQuant
from pruneofa.quantization.qat import (
    load_qat_buffers,
    own_parametrized_class,
    prepare_qat,
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
    return fold_masks(plain)


@torch.no_grad()
def fold_masks(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into its weight, in place, as where(mask, w, +0.0): the product
    mask * w would leave -0.0 for negative pruned weights."""
    for module in M.masked_modules(model).values():
        kept = torch.where(M.get_mask(module), module.weight, torch.zeros_like(module.weight))
        M.fold_mask(module)
        module.weight.copy_(kept)
    return model


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


def load_model_dir(path: str | Path) -> nn.Module:
    """A plain transformers model from a directory, with the class named in config.json."""
    import transformers

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path} has no config.json", "pass a directory written by save_pretrained or pruneofa")
    from pruneofa.export.compact import config_and_class

    config, model_class = config_and_class(path)  # a compacted checkpoint (export --compact) has its own class
    return (model_class or transformers.AutoModel).from_pretrained(path, config=config).eval()


def load_qat(path: str | Path, lock_sparsity: bool = True) -> nn.Module:
    """Rebuild a QAT model from `save_qat` output.

    lock_sparsity=True puts pattern-lock masks (weight != 0) on the QAT layers that have zeros before
    the fake quantization, as a run that continues sparse QAT needs."""
    path = Path(path)
    state_path = path / QAT_STATE_FILE
    if not state_path.is_file():
        raise UserError(f"{path} has no {QAT_STATE_FILE}", "pass a directory written by save_qat")
    try:
        buffers = load_file(state_path)
        from safetensors import safe_open

        with safe_open(state_path, "pt") as f:
            config = QuantConfig.model_validate(json.loads(f.metadata()["quant_config"]))
    except (SafetensorError, KeyError, ValueError, OSError) as err:
        raise UserError(f"cannot read {state_path}: {err}".splitlines()[0], "re-create it with save_qat") from None
    model = load_model_dir(path)
    if lock_sparsity:
        from pruneofa.sparsity.selection import select_prunable

        for module in select_prunable(model, config.include, config.exclude).values():
            if bool((module.weight == 0).any()):
                M.attach_mask(module, module.weight.detach() != 0)
    prepare_qat(model, config)
    load_qat_buffers(model, buffers)
    return model.eval()
