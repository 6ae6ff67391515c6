"""Loading a model directory of any kind (see `layout`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pruneofa.errors import UserError
from pruneofa.modeldir.compressed_read import load_compressed
from pruneofa.modeldir.layout import kind_of, load_plain
from pruneofa.modeldir.qat_dir import load_qat


def load_model(model_or_dir: nn.Module | str | Path) -> tuple[nn.Module, Path | None]:
    """(model, its directory or None): a model object as it is, or a directory of any kind loaded
    (a QAT dir as its QAT model, a compressed dir rebuilt)."""
    if isinstance(model_or_dir, nn.Module):
        return model_or_dir, None
    path = Path(model_or_dir)
    if not path.is_dir():
        raise UserError(f"model directory '{path}' does not exist", "pass a directory with config.json")
    kind = kind_of(path)
    if kind == "qat":
        return load_qat(path, lock_sparsity=False), path
    if kind == "compressed":
        return load_compressed(path), path
    return load_plain(path), path
