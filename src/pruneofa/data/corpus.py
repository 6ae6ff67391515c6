"""Pre-training corpora: where the documents come from and which of them are held out.

A corpus is a list of sources (local files, offline assets, or one hub dataset), each read as a
`datasets.Dataset` with a `text` column that lives on disk (arrow, memory-mapped), never as a
Python list. A document is a non-blank text, stripped; a `.txt` file holds one document per
paragraph (blank-line separated), its lines joined by spaces. A seeded fraction of the documents
is held out for validation before packing (`held_out_mask`), the same documents for every run of
the same split seed. `pruneofa.data.block_cache` tokenizes and packs them into blocks on disk.
"""

from __future__ import annotations

import os
import random
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from transformers import PreTrainedTokenizerBase

from pruneofa.config.base import StrictModel
from pruneofa.data.assets import asset_path, is_asset
from pruneofa.errors import UserError

TEXT_SUFFIXES = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class CorpusConfig(StrictModel):
    train_files: list[str] | None = Field(None, description="text/json/jsonl/csv/parquet files or offline/* assets")
    dataset: str | None = Field(None, description="a datasets hub name (online only, streamed), instead of train_files")
    dataset_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    validation_fraction: float = Field(0.05, ge=0.0, lt=0.5)
    split_seed: int = Field(0, description="which documents are held out; fixed apart from the run's seed, so "
                            "runs of other seeds (teacher, students, the retrieval eval) hold out the same ones")
    max_documents: int | None = Field(None, ge=1)
    cache_dir: str | None = Field(None, description="where tokenized, packed blocks are kept (default: "
                                  "$PRUNEOFA_CORPUS_CACHE, else ~/.cache/pruneofa/corpus)")
    tokenize_processes: int | None = Field(None, ge=1, description="processes that tokenize (default: 1 for under "
                                           "32 MB of text, else one per CPU core)")


@dataclass(frozen=True)
class Source:
    """One input of a corpus: what identifies its content (for the cache key) and how to read it."""

    name: str
    identity: dict[str, Any]
    paragraphs: bool = False  # .txt: documents are paragraphs whose lines are joined by spaces
    size: int = 0  # bytes on disk (0 for a hub dataset)


def _file_source(name: str) -> Source:
    path = asset_path(name) if is_asset(name) else Path(name)
    if not path.is_file():
        raise UserError(f"corpus file '{name}' not found", "fix data.train_files (a list of existing files)")
    if not is_asset(name) and path.suffix.lower() not in TEXT_SUFFIXES:
        raise UserError(f"corpus file '{name}' has an unknown type", f"use one of {sorted(TEXT_SUFFIXES)}")
    stat = path.stat()
    identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return Source(name, identity, paragraphs=path.suffix.lower() == ".txt", size=stat.st_size)


def corpus_sources(cfg: CorpusConfig) -> list[Source]:
    """The corpus's sources, checked to exist; nothing is read yet."""
    if cfg.train_files:
        return [_file_source(name) for name in cfg.train_files]
    if cfg.dataset:
        return [Source(cfg.dataset, {"dataset": cfg.dataset, "config": cfg.dataset_config, "split": cfg.split})]
    raise UserError("no corpus given", "set data.train_files=[a.txt,...] or data.dataset=NAME")


def _wiki_summaries(path: Path):
    import json

    import datasets

    # {title: {"title", "extract", ...}}: the extract is the article's summary text (a few MB: read whole)
    entries = json.loads(path.read_text(encoding="utf-8"))
    return datasets.Dataset.from_dict({"text": [e.get("extract", "") for e in entries.values() if isinstance(e, dict)]})


def _streamed_hub_dataset(cfg: CorpusConfig, workdir: Path):
    import datasets

    try:
        stream = datasets.load_dataset(cfg.dataset, cfg.dataset_config, split=cfg.split, streaming=True)
        column = cfg.text_column

        def texts():
            for row in stream:
                yield {"text": row.get(column)}

        return datasets.Dataset.from_generator(texts, features=datasets.Features({"text": datasets.Value("string")}),
                                               cache_dir=str(workdir))
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds when offline
        raise UserError(f"cannot load dataset '{cfg.dataset}': {str(err).splitlines()[0]}",
                        "use data.train_files with local files when offline") from None


def read_source(source: Source, cfg: CorpusConfig, workdir: Path):
    """The source as a `datasets.Dataset` with one `text` column, its arrow files under `workdir`."""
    import datasets

    if "dataset" in source.identity:
        return _streamed_hub_dataset(cfg, workdir)
    if is_asset(source.name):
        return _wiki_summaries(asset_path(source.name))
    path = Path(source.identity["path"])
    if source.size == 0:  # datasets' builders fail on an empty file; it simply holds no document
        return datasets.Dataset.from_dict({"text": []}, features=datasets.Features({"text": datasets.Value("string")}))
    builder = TEXT_SUFFIXES[path.suffix.lower()]
    options = {"sample_by": "paragraph"} if builder == "text" else {}
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(workdir), **options)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err
        raise UserError(f"cannot read corpus file '{source.name}' as {builder} ({type(cause).__name__}: "
                        f"{str(cause).splitlines()[0] if str(cause) else ''})",
                        f"fix the file, or give it the suffix of its format ({', '.join(sorted(TEXT_SUFFIXES))})") from None
    column = "text" if builder == "text" else cfg.text_column
    if column not in ds.column_names:
        raise UserError(f"'{source.name}' has no column '{column}' (columns: {', '.join(ds.column_names)})",
                        "set data.text_column")
    return ds.select_columns([column]).rename_column(column, "text") if column != "text" else ds.select_columns(["text"])


def clean_documents(texts: list[Any], paragraphs: bool) -> list[str]:
    """The non-blank documents among `texts`, stripped (a paragraph's lines joined by spaces)."""
    docs = [(t.replace("\n", " ") if paragraphs else t).strip() for t in texts if isinstance(t, str)]
    return [d for d in docs if d]


def held_out_mask(n_documents: int, fraction: float, seed: int) -> np.ndarray:
    """Which of `n_documents` are held out: the first round(fraction n) of a permutation seeded by `seed`.

    The permutation is Python's `random.Random(seed).shuffle` (kept since the first release, so the
    offline corpus holds out the same summaries as ever), shuffled in an int64 array: 8 bytes per
    document, while the cache is built, instead of a list of Python ints.
    """
    mask = np.zeros(n_documents, dtype=bool)
    if fraction == 0 or n_documents < 2:
        return mask
    order = array("q", range(n_documents))
    random.Random(seed).shuffle(order)
    mask[np.frombuffer(order, dtype=np.int64)[: max(1, round(fraction * n_documents))]] = True
    return mask


def split_documents(docs: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(kept, held out), each in corpus order: the split the LM stages make of the same documents."""
    held = held_out_mask(len(docs), fraction, seed)
    return [d for d, h in zip(docs, held) if not h], [d for d, h in zip(docs, held) if h]


def special_token_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after one sequence ([CLS] ... [SEP] for BERT, none for GPT-2)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello")["input_ids"]
    at = next(i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain)
    return full[:at], full[at + len(plain) :]


def separator_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The id that ends each document in the packed stream ([SEP] for BERT, <|endoftext|> for GPT-2)."""
    return tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id


def default_processes(sources: list[Source]) -> int:
    """One process under 32 MB of text (starting workers costs more than it saves), else one per core."""
    total = sum(s.size for s in sources)
    if total and total < 32 << 20:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
