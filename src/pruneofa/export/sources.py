"""Where an export starts: a model object, or a directory written by pruneofa or save_pretrained."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from pruneofa.errors import UserError

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
)


def resolve_model(model_or_dir: nn.Module | str | Path) -> tuple[nn.Module, Path | None]:
    """(model, its directory or None). A directory may hold a QAT checkpoint (qat_state.safetensors),
    a compressed checkpoint (compressed.safetensors) or a plain transformers model."""
    if isinstance(model_or_dir, nn.Module):
        return model_or_dir, None
    from pruneofa.export.compressed import COMPRESSED_FILE, load_compressed
    from pruneofa.quantization.checkpoint import QAT_STATE_FILE, load_model_dir, load_qat

    path = Path(model_or_dir)
    if not path.is_dir():
        raise UserError(f"model directory '{path}' does not exist", "pass a directory with config.json")
    if (path / QAT_STATE_FILE).is_file():
        return load_qat(path, lock_sparsity=False), path
    if (path / COMPRESSED_FILE).is_file():
        return load_compressed(path), path
    return load_model_dir(path), path


def write_tokenizer(out: Path, tokenizer: Any = None, source_dir: Path | None = None) -> None:
    """Save `tokenizer`, or copy the tokenizer files that sit beside the source model."""
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    elif source_dir is not None and source_dir.resolve() != out.resolve():
        for name in TOKENIZER_FILES:
            if (source_dir / name).is_file():
                shutil.copy2(source_dir / name, out / name)
