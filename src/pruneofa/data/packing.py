"""Packing: token streams in, rows of exactly `seq_len` tokens out, written straight to disk.

Each document's tokens are followed by the separator and the documents are concatenated; the
stream is cut into bodies of `seq_len - len(prefix) - len(suffix)` tokens, each framed by the
tokenizer's special tokens ([CLS] body [SEP] for BERT), so no row has padding. The tail shorter
than one body is dropped. Rows go into a preallocated `.npy` file through a memory map, a chunk
at a time, so the memory used does not depend on the corpus size. `pack_corpus` does it for the
tokenized sources of a corpus, reading their arrow files a record batch at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from pruneofa.data.corpus import CorpusConfig, held_out_mask, separator_id, special_token_frame
from pruneofa.errors import UserError


def stream_length(lengths: np.ndarray, with_separator: bool) -> int:
    """Tokens the documents of `lengths` put into the stream."""
    return int(lengths.sum(dtype=np.int64)) + (len(lengths) if with_separator else 0)


def with_separators(flat: np.ndarray, lengths: np.ndarray, separator: int | None) -> np.ndarray:
    """The documents' tokens (`flat`, cut by `lengths`) with `separator` after each document."""
    if separator is None:
        return flat
    return np.insert(flat, np.cumsum(lengths), separator)


class BlockWriter:
    """Writes `n_rows` rows of [prefix, body, suffix] into `path` (a .npy of shape [n_rows, seq_len])."""

    def __init__(self, path: Path, n_rows: int, seq_len: int, prefix: list[int], suffix: list[int], dtype: np.dtype):
        self.path, self.n_rows, self.seq_len = path, n_rows, seq_len
        self.prefix, self.suffix = np.asarray(prefix, dtype=dtype), np.asarray(suffix, dtype=dtype)
        self.body = seq_len - len(prefix) - len(suffix)
        self.dtype = dtype
        self.rows = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_rows, seq_len))
        self.written = 0
        self.carry = np.empty(0, dtype=dtype)

    def add(self, tokens: np.ndarray) -> None:
        stream = np.concatenate([self.carry, tokens.astype(self.dtype, copy=False)])
        n = min(len(stream) // self.body, self.n_rows - self.written)
        if n:
            rows = self.rows[self.written : self.written + n]
            rows[:, : len(self.prefix)] = self.prefix
            rows[:, len(self.prefix) : len(self.prefix) + self.body] = stream[: n * self.body].reshape(n, self.body)
            rows[:, self.seq_len - len(self.suffix) :] = self.suffix
            self.written += n
        self.carry = stream[n * self.body :].copy()

    def close(self) -> int:
        """Flush to disk; returns the rows written (the caller checks they are all there)."""
        self.rows.flush()
        del self.rows
        return self.written


def _arrow_batches(ds):
    """The dataset's record batches, in order. Its arrow files are read with plain reads, not through
    the memory map datasets uses, so the pages already packed are not kept in this process's RSS."""
    import pyarrow as pa

    files = [f["filename"] for f in ds.cache_files]
    if not files or ds._indices is not None:  # a dataset held in memory (the offline asset): nothing to map
        yield from ds.with_format("arrow").iter(batch_size=10_000)
        return
    for name in files:
        with pa.OSFile(name) as fh:
            yield from pa.ipc.open_stream(fh)


def _document_batches(tokenized: list, limit: int | None):
    """(flat token ids, lengths) of up to `limit` documents, a batch at a time, in corpus order."""
    import pyarrow.compute as pc

    left = limit
    for ds in tokenized:
        for table in _arrow_batches(ds):
            column = table.column("input_ids")
            column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
            if left is not None:
                column = column.slice(0, left)
                left -= len(column)
            if len(column):
                yield column.flatten().to_numpy(zero_copy_only=False), pc.list_value_length(column).to_numpy()
            if left == 0:
                return


def pack_corpus(tokenized: list, cfg: CorpusConfig, tokenizer: PreTrainedTokenizerBase, seq_len: int, workdir: Path,
                dtype: np.dtype) -> dict[str, Any]:
    """Pack the tokenized sources (in corpus order) into `workdir`/{train,validation}.npy, documents held out
    by `held_out_mask`; returns the document and token counts per split."""
    prefix, suffix = special_token_frame(tokenizer)
    if seq_len - len(prefix) - len(suffix) < 8:
        raise UserError(f"train.seq_len={seq_len} is too short", "use train.seq_len >= 16")
    separator = separator_id(tokenizer)
    lengths = [n for _, n in _document_batches(tokenized, cfg.max_documents)]
    lengths = np.concatenate(lengths) if lengths else np.empty(0, dtype=np.int64)
    if len(lengths) == 0:
        sources = ", ".join(cfg.train_files or [cfg.dataset or ""])
        raise UserError(f"corpus {sources} holds no text (empty or blank lines only)", "point data.train_files at text")
    held = held_out_mask(len(lengths), cfg.validation_fraction, cfg.split_seed)
    body = seq_len - len(prefix) - len(suffix)
    writers = {split: BlockWriter(workdir / f"{split}.npy", stream_length(lengths[mask], separator is not None) // body,
                                  seq_len, prefix, suffix, dtype)
               for split, mask in (("train", ~held), ("validation", held))}
    if writers["train"].n_rows == 0:
        raise UserError(f"the corpus is shorter than one block of {seq_len} tokens", "add text or lower train.seq_len")
    start = 0
    with tqdm(total=len(lengths), desc="pack blocks", unit="doc", leave=False) as bar:
        for flat, n in _document_batches(tokenized, cfg.max_documents):
            stream = with_separators(flat, n, separator)
            owner = np.repeat(held[start : start + len(n)], n + (separator is not None))
            writers["train"].add(stream[~owner])
            writers["validation"].add(stream[owner])
            start += len(n)
            bar.update(len(n))
    for writer in writers.values():
        if writer.close() != writer.n_rows:
            raise RuntimeError(f"packed {writer.written} of {writer.n_rows} rows into {writer.path}; this is a bug")
    return {"documents": {"train": int((~held).sum()), "validation": int(held.sum())},
            "tokens": {"train": stream_length(lengths[~held], False), "validation": stream_length(lengths[held], False)}}
