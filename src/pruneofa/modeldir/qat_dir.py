"""Reading a QAT dir (`pruneofa quantize`, `quantization.save_qat`): the plain model, then its
quantization state (weight scales, observer ranges, the QuantConfig) put back on it."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from pruneofa.errors import UserError
from pruneofa.modeldir.layout import QAT_STATE_FILE, load_plain
from pruneofa.quantization.config import QuantConfig
from pruneofa.quantization.qat import load_qat_buffers, prepare_qat
from pruneofa.sparsity import masks as M


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
    model = load_plain(path)
    if lock_sparsity:
        from pruneofa.sparsity.selection import select_prunable

        for module in select_prunable(model, config.include, config.exclude).values():
            if bool((module.weight == 0).any()):
                M.attach_mask(module, module.weight.detach() != 0)
    prepare_qat(model, config)
    load_qat_buffers(model, buffers)
    return model.eval()
