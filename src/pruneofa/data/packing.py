"""Packing: token streams in, rows of exactly `seq_len` tokens out, written straight to disk.

Each document's tokens are followed by the separator and the documents are concatenated; the
stream is cut into bodies of `seq_len - len(prefix) - len(suffix)` tokens, each framed by the
tokenizer's special tokens ([CLS] body [SEP] for BERT), so no row has padding. The tail shorter
than one body is dropped. Rows go into a preallocated `.npy` file through a memory map, a chunk
at a time, so the memory used does not depend on the corpus size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
