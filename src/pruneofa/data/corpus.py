"""Pre-training corpora: text in, packed token blocks out.

Documents are tokenized, joined with the tokenizer's separator and cut into blocks of exactly
`seq_len` tokens (the paper packs sequences to the model's length), so no block has padding.
A seeded fraction of *documents* is held out for validation before packing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from pydantic import Field
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from pruneofa.data.assets import asset_path, is_asset
from pruneofa.errors import UserError
from pruneofa.config.base import StrictModel

TEXT_SUFFIXES = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class CorpusConfig(StrictModel):
    train_files: list[str] | None = Field(None, description="text/json/jsonl/csv/parquet files or offline/* assets")
    dataset: str | None = Field(None, description="a datasets hub name (online only), instead of train_files")
    dataset_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    validation_fraction: float = Field(0.05, ge=0.0, lt=0.5)
    split_seed: int = Field(0, description="which documents are held out; fixed apart from the run's seed, so "
                            "runs of other seeds (teacher, students, the retrieval eval) hold out the same ones")
    max_documents: int | None = Field(None, ge=1)


def _read_wiki_summaries(path: Path) -> list[str]:
    # {title: {"title", "extract", ...}}: the extract is the article's summary text
    entries = json.loads(path.read_text(encoding="utf-8"))
    return [e.get("extract", "") for e in entries.values() if isinstance(e, dict)]


def _read_file(path_text: str, text_column: str) -> list[str]:
    if is_asset(path_text):
        return _read_wiki_summaries(asset_path(path_text))
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"corpus file '{path_text}' not found", "fix data.train_files (a list of existing files)")
    builder = TEXT_SUFFIXES.get(path.suffix.lower())
    if builder is None:
        raise UserError(f"corpus file '{path_text}' has an unknown type", f"use one of {sorted(TEXT_SUFFIXES)}")
    if builder == "text":  # one document per paragraph (blank-line separated)
        return [p.replace("\n", " ") for p in path.read_text(encoding="utf-8").split("\n\n")]
    import datasets

    ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    if text_column not in ds.column_names:
        raise UserError(f"'{path_text}' has no column '{text_column}' (columns: {', '.join(ds.column_names)})",
                        "set data.text_column")
    return list(ds[text_column])


def load_documents(cfg: CorpusConfig) -> list[str]:
    """All non-blank documents of the corpus, in a fixed order."""
    if cfg.train_files:
        docs = [d for f in cfg.train_files for d in _read_file(f, cfg.text_column)]
        source = ", ".join(cfg.train_files)
    elif cfg.dataset:
        import datasets

        try:
            ds = datasets.load_dataset(cfg.dataset, cfg.dataset_config, split=cfg.split)
        except Exception as err:  # noqa: BLE001 - datasets raises many kinds when offline
            raise UserError(f"cannot load dataset '{cfg.dataset}': {str(err).splitlines()[0]}",
                            "use data.train_files with local files when offline") from None
        docs, source = list(ds[cfg.text_column]), cfg.dataset
    else:
        raise UserError("no corpus given", "set data.train_files=[a.txt,...] or data.dataset=NAME")
    docs = [d.strip() for d in docs if d and d.strip()]
    if not docs:
        raise UserError(f"corpus {source} holds no text (empty or blank lines only)", "point data.train_files at text")
    return docs[: cfg.max_documents] if cfg.max_documents else docs


def split_documents(docs: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    if fraction == 0 or len(docs) < 2:
        return docs, []
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(fraction * len(docs)))
    val = set(order[:n_val])
    return [d for i, d in enumerate(docs) if i not in val], [d for i, d in enumerate(docs) if i in val]


def special_token_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after one sequence ([CLS] ... [SEP] for BERT, none for GPT-2)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello")["input_ids"]
    at = next(i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain)
    return full[:at], full[at + len(plain) :]


def pack_blocks(docs: list[str], tokenizer: PreTrainedTokenizerBase, seq_len: int, desc: str = "tokenize") -> torch.Tensor:
    """Token blocks of exactly `seq_len` (incl. special tokens), as a LongTensor [n_blocks, seq_len]."""
    prefix, suffix = special_token_frame(tokenizer)
    body = seq_len - len(prefix) - len(suffix)
    if body < 8:
        raise UserError(f"train.seq_len={seq_len} is too short", "use train.seq_len >= 16")
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    stream: list[int] = []
    for start in tqdm(range(0, len(docs), 1000), desc=desc, unit="kdoc", leave=False):
        for ids in tokenizer(docs[start : start + 1000], add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            if sep is not None:
                stream.append(sep)
    n_blocks = len(stream) // body
    blocks = [prefix + stream[i * body : (i + 1) * body] + suffix for i in range(n_blocks)]
    return torch.tensor(blocks, dtype=torch.long).view(n_blocks, seq_len) if blocks else torch.empty(0, seq_len, dtype=torch.long)


def build_lm_blocks(cfg: CorpusConfig, tokenizer: PreTrainedTokenizerBase, seq_len: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_blocks, validation_blocks) for a corpus recipe section."""
    train_docs, val_docs = split_documents(load_documents(cfg), cfg.validation_fraction, cfg.split_seed)
    train = pack_blocks(train_docs, tokenizer, seq_len, "tokenize train")
    if len(train) == 0:
        raise UserError(f"the corpus is shorter than one block of {seq_len} tokens", "add text or lower train.seq_len")
    return train, pack_blocks(val_docs, tokenizer, seq_len, "tokenize validation")
