"""What a model directory is, and loading one of any kind.

    plain       config.json + model*.safetensors: a transformers checkpoint (every stage's output but
                quantize; a masked model is written plain, its masks folded)
    qat         a plain dir + qat_state.safetensors (scales, observer ranges): `pruneofa quantize`
    compressed  config.json + compressed.safetensors (bitmask + non-zeros): `export --format compressed`
    compact     a plain or compressed dir whose config records removed heads/neurons (`compact`), with
                pruneofa's own classes (`modeling_compact`): `export --compact`

`kind_of` tells them apart and `load_plain` loads a plain (or compact) one; `loading.load_model` loads any.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from pruneofa.errors import UserError
from pruneofa.modeldir import modeling_compact
from pruneofa.quantization.checkpoint import QAT_STATE_FILE

COMPRESSED_FILE = "compressed.safetensors"
KINDS = ("plain", "qat", "compressed")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
)


def kind_of(path: str | Path) -> str:
    """"qat", "compressed" or "plain" (a compact dir is one of these too: see `is_compact_dir`)."""
    path = Path(path)
    if (path / QAT_STATE_FILE).is_file():
        return "qat"
    if (path / COMPRESSED_FILE).is_file():
        return "compressed"
    return "plain"


def is_compact_dir(path: str | Path) -> bool:
    """Whether `path` holds a checkpoint that needs `modeling_compact` (fewer heads than its config)."""
    try:
        return modeling_compact.COMPACT_KEY in json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):  # no or unreadable config.json: the caller's own checks report it
        return False


def config_and_class(path: str | Path) -> tuple[Any, type | None]:
    """(config, model class) of a model directory: pruneofa's own `modeling_compact` classes for a
    compact checkpoint (no remote code), else AutoConfig and the transformers class named in
    config.json (None when transformers has no such class)."""
    import transformers

    if not is_compact_dir(path):
        config = transformers.AutoConfig.from_pretrained(path)
        architectures = config.architectures or []
        return config, getattr(transformers, architectures[0], None) if architectures else None
    architectures = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    model_class = getattr(modeling_compact, architectures[0], None) if architectures else None
    if model_class is None:
        raise UserError(f"{path}: unknown compact architecture {architectures}", "re-export it with --compact")
    return model_class.config_class.from_pretrained(path), model_class


def load_plain(path: str | Path) -> nn.Module:
    """A plain transformers model from a directory, with the class named in config.json."""
    import transformers

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path} has no config.json", "pass a directory written by save_pretrained or pruneofa")
    config, model_class = config_and_class(path)  # a compacted checkpoint (export --compact) has its own class
    return (model_class or transformers.AutoModel).from_pretrained(path, config=config).eval()


def write_tokenizer(out: Path, tokenizer: Any = None, source_dir: Path | None = None) -> None:
    """Save `tokenizer`, or copy the tokenizer files that sit beside the source model."""
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    elif source_dir is not None and source_dir.resolve() != out.resolve():
        for name in TOKENIZER_FILES:
            if (source_dir / name).is_file():
                shutil.copy2(source_dir / name, out / name)
