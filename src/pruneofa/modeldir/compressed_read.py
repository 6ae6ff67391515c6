"""Reading a compressed dir (format: `modeldir.compressed`): the file checked, then every tensor
rebuilt and the model built around them."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneofa.errors import UserError
from pruneofa.modeldir import bitmask, gaps
from pruneofa.modeldir.container import read_container
from pruneofa.modeldir.layout import COMPRESSED_FILE, config_and_class
from pruneofa.quantization.fake_quant import dequantize_symmetric


def _file_of(path: str | Path) -> Path:
    path = Path(path)
    file = path / COMPRESSED_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"no compressed checkpoint at '{path}'", f"pass a directory holding {COMPRESSED_FILE}")
    return file


def _decode(file: Path, name: str, entry: dict[str, Any], stored: dict[str, torch.Tensor]) -> torch.Tensor:
    shape = tuple(entry["shape"])
    try:
        values = stored[f"{name}#values"]
        if entry["encoding"] == "bitmask":
            bits = stored[f"{name}#bitmask"]
            if bits.numel() != math.ceil(math.prod(shape) / 8) or bitmask.count(bits, shape) != values.numel():
                raise ValueError("bitmask and values disagree")
            tensor = bitmask.unpack(bits, values, shape)
        elif entry["encoding"] == "gaps":
            tensor = gaps.unpack(stored[f"{name}#gaps"], values, shape)
        elif values.numel() == math.prod(shape):
            tensor = values.reshape(shape)
        else:
            raise ValueError(f"{values.numel()} values for shape {list(shape)}")
        if entry["storage"] == "int8":
            axis = entry.get("scale_axis")
            tensor = dequantize_symmetric(tensor, stored[f"{name}#scale"], 0 if axis is None else axis)
        return tensor.to(getattr(torch, entry["dtype"]))
    except (KeyError, ValueError, RuntimeError, AttributeError) as err:
        raise UserError(f"{file.name}: tensor '{name}' cannot be rebuilt ({err})",
                        "re-create it with pruneofa.export.save_compressed") from None


def load_compressed(path: str | Path) -> nn.Module:
    """The model a compressed checkpoint describes (a directory or the .safetensors file), in eval mode.

    Checks the file (completeness, version, checksums) and that every tensor's shape agrees with
    the model config.json describes, before building anything."""
    import transformers

    file = _file_of(path)
    stored, manifest, _ = read_container(file)
    if not (file.parent / "config.json").is_file():
        raise UserError(f"no config.json beside {file}", "keep the files save_compressed wrote together")
    config, named = config_and_class(file.parent)  # a compacted model (export --compact) has its own class
    arch = str(manifest.get("architecture"))
    model_class = named if named is not None and named.__name__ == arch else getattr(transformers, arch, None)
    if model_class is None:
        raise UserError(f"{file.name}: unknown model class '{manifest.get('architecture')}'",
                        "install a transformers version that has it")
    with torch.device("meta"):  # shapes only: the weights come from the file, so nothing is initialised twice
        expected = model_class(config).state_dict()
    entries = manifest["tensors"]
    missing, unexpected = sorted(set(expected) - set(entries)), sorted(set(entries) - set(expected))
    if missing or unexpected:
        raise UserError(f"{file.name} does not match config.json: {len(missing)} tensors missing "
                        f"({missing[:1]}), {len(unexpected)} unexpected ({unexpected[:1]})",
                        "keep the config.json save_compressed wrote beside it")
    for name, entry in entries.items():
        shape = list(expected[entry.get("of", name)].shape) if entry["encoding"] == "alias" else entry["shape"]
        if list(expected[name].shape) != shape:
            raise UserError(f"shape of '{name}' is {shape} in {file.name} but {list(expected[name].shape)} "
                            "by config.json", "keep the config.json save_compressed wrote beside it")
    state = {n: _decode(file, n, e, stored) for n, e in entries.items() if e["encoding"] != "alias"}
    for name, entry in entries.items():
        if entry["encoding"] == "alias":
            state[name] = state[entry["of"]]
    # transformers builds the model on the meta device, takes these tensors and makes the buffers a
    # checkpoint does not hold (position ids); the key check above has already made it strict
    with _quiet_loading():
        model = model_class.from_pretrained(None, config=config, state_dict=state, dtype=torch.float32)
    return model.eval()


@contextlib.contextmanager
def _quiet_loading():
    """from_pretrained's weight-loading progress bar and report are for hub downloads, not this."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


