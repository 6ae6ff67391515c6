"""sentence-transformers model directories: a transformers checkpoint at the top (the first module,
`Transformer`, with path "") plus the files that make it a sentence encoder:

    modules.json                        the module pipeline, e.g. Transformer -> Pooling -> Normalize
    1_Pooling/config.json               the pooling ("pooling_mode": "mean", or the older pooling_mode_*_token flags)
    2_Normalize/                        no files (sentence-transformers does not need the folder to exist)
    sentence_bert_config.json           max_seq_length, do_lower_case
    config_sentence_transformers.json   versions, prompts, similarity function

pruneofa prunes, trains and exports the transformer at the top like any model directory and carries
these files over unchanged (`copy_sentence_transformers_files`), so the outputs of a
sentence-transformers input (prune, transfer, quantize, export) are sentence-transformers directories
again: `SentenceTransformer(dir)` loads the pruned transformer with the original pooling. The
runtime's `encode` reads the pooling with `read_pooling`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pruneofa.errors import UserError

MODULES_FILE = "modules.json"
TOP_FILES = (MODULES_FILE, "sentence_bert_config.json", "config_sentence_transformers.json")
POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}
SERVED_POOLING = ("mean", "cls", "max")


@dataclass(frozen=True)
class SentencePooling:
    """How token states become one sentence embedding: `mode` over the attended tokens, then an L2
    normalization when the pipeline has a Normalize module."""

    mode: str = "mean"
    normalize: bool = False
    max_seq_length: int | None = None  # sentence_bert_config.json's truncation length


def is_sentence_transformers_dir(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / MODULES_FILE).is_file()


def _modules(path: Path) -> list[dict[str, Any]]:
    try:
        modules = json.loads((path / MODULES_FILE).read_text())
        kinds = [(m["type"].rpartition(".")[2], m.get("path", "")) for m in modules]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"cannot read {path / MODULES_FILE}: {err}", "re-save the model with sentence-transformers") from None
    if not kinds or kinds[0][0] != "Transformer" or kinds[0][1] not in ("", "."):
        raise UserError(f"{path}: the first module of modules.json is not a Transformer at the top of the directory",
                        "re-save it with sentence-transformers 3 or later, which puts the transformer there")
    return modules


def copy_sentence_transformers_files(source_dir: str | Path | None, out: str | Path) -> bool:
    """Copy the sentence-transformers files of `source_dir` (if it is such a directory) into `out`:
    the top-level files and every module folder but the transformer's. Returns whether it did."""
    if not is_sentence_transformers_dir(source_dir):
        return False
    source, out = Path(source_dir), Path(out)
    if source.resolve() == out.resolve():
        return True
    modules = _modules(source)
    for name in TOP_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    for module in modules[1:]:
        folder = module.get("path") or ""
        if not folder:
            continue
        if (source / folder).is_dir():
            shutil.copytree(source / folder, out / folder, dirs_exist_ok=True)
        else:  # a module without files (Normalize): its folder is often left out of a published model
            (out / folder).mkdir(parents=True, exist_ok=True)
    return True


def _pooling_mode(config: dict[str, Any]) -> str:
    mode = config.get("pooling_mode")
    if mode is None:  # the older format: one boolean per mode
        mode = [name for key, name in POOLING_FLAGS.items() if config.get(key)] or [
            key for key, value in config.items() if key.startswith("pooling_mode_") and value]
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    return mode if isinstance(mode, str) else "+".join(map(str, mode))


def read_pooling(path: str | Path) -> SentencePooling:
    """The pooling of a sentence-transformers directory; UserError for a pipeline the runtime cannot
    serve (a module other than Transformer, Pooling and Normalize, or another pooling than mean, cls, max)."""
    path = Path(path)
    mode, normalize = None, False
    for module in _modules(path)[1:]:
        kind = module["type"].rpartition(".")[2]
        if kind == "Pooling":
            config_file = path / module.get("path", "") / "config.json"
            config = json.loads(config_file.read_text()) if config_file.is_file() else {}
            mode = _pooling_mode(config) if config else "mean"
        elif kind == "Normalize":
            normalize = True
        else:
            raise UserError(f"{path}: module {kind} of modules.json is not served by pruneofa's encode",
                            "use SentenceTransformer(dir).encode for this model")
    if mode is None or mode not in SERVED_POOLING:
        raise UserError(f"{path}: pooling {mode!r} is not served by pruneofa's encode (it serves "
                        f"{', '.join(SERVED_POOLING)})", "use SentenceTransformer(dir).encode for this model")
    settings_file = path / "sentence_bert_config.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    return SentencePooling(mode, normalize, settings.get("max_seq_length"))
