"""The on-disk cache of packed LM blocks: a corpus is tokenized once, then read by index.

    <cache root>/<key>/train.npy        [n_train, seq_len]  uint16 (uint32 for vocabularies over 65,535)
                      /validation.npy   [n_val, seq_len]
                      /manifest.json    shapes, byte sizes and xxh3-128 checksums; written last

The key hashes everything the blocks depend on: each file's path, size and mtime (or the hub
dataset's name, config and split), the text column, the tokenizer (its class, its full
serialization or vocabulary, and its special-token frame), `seq_len`, the held-out split
(fraction and seed), `max_documents` and `PACKING_VERSION`. A cache is built in a temporary
sibling directory and renamed into place, so a directory under its key is complete; one whose
manifest is missing or disagrees with its files (a crash, a disk error, an edit) is removed and
built again. Two processes that build the same key at once both finish; the first rename wins.

Tokenizing is `datasets.map(batched=True, num_proc=...)`; the arrow files it writes live in the
temporary directory and go with it. Training opens the arrays with `np.load(mmap_mode="r")` and
reads only the rows of its batches, so its memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from pruneofa.data.corpus import (
    CorpusConfig,
    Source,
    corpus_sources,
    default_processes,
    separator_id,
    special_token_frame,
)
from pruneofa.data.packing import pack_corpus
from pruneofa.data.tokenizing import tokenize_source
from pruneofa.fileio import atomic_write_text, fsync_dir

PACKING_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")
READ_CHUNK = 16 << 20  # bytes per read when checksumming: plain reads, so no page of the file stays mapped


class BlockArray:
    """Packed blocks [n, seq_len] on disk; `rows(indices)` reads just those rows as a LongTensor."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.array.shape[1])

    def rows(self, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(self.array[np.asarray(indices, dtype=np.int64)].astype(np.int64))

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.array[index].astype(np.int64))


@dataclass
class CorpusCache:
    path: Path
    train: BlockArray
    validation: BlockArray
    manifest: dict[str, Any]
    built: bool  # tokenized by this call (False: reused)

    @property
    def size_bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest["files"].values())

    def summary(self) -> str:
        mb = self.size_bytes / 1e6
        how = f"built in {self.manifest['build_seconds']:.1f} s" if self.built else "reused"
        return (f"corpus cache: {self.path} ({mb:,.1f} MB: {len(self.train):,} train + {len(self.validation):,} "
                f"validation blocks of {self.train.seq_len} tokens; {how})")


def cache_root(cfg: CorpusConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    if env := os.environ.get("PRUNEOFA_CORPUS_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pruneofa" / "corpus"


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """What decides the ids a tokenizer gives: its class, its serialization (or vocabulary) and its frame."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    prefix, suffix = special_token_frame(tokenizer)
    return {"class": type(tokenizer).__name__, "name": getattr(tokenizer, "name_or_path", ""), "size": len(tokenizer),
            "hash": hashlib.sha256(text.encode()).hexdigest(), "frame": [prefix, suffix, separator_id(tokenizer)]}


def cache_inputs(cfg: CorpusConfig, sources: list[Source], tokenizer: PreTrainedTokenizerBase, seq_len: int) -> dict:
    return {"packing_version": PACKING_VERSION, "sources": [s.identity for s in sources],
            "text_column": cfg.text_column, "max_documents": cfg.max_documents, "seq_len": seq_len,
            "validation_fraction": cfg.validation_fraction, "split_seed": cfg.split_seed,
            "tokenizer": tokenizer_identity(tokenizer)}


def cache_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]


def file_checksum(path: Path) -> str:
    import xxhash

    digest = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def open_cache(path: Path, verify_checksums: bool = True) -> CorpusCache | None:
    """The cache at `path`, or None when it is absent, partial or does not match its manifest."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        arrays = {}
        for split in SPLITS:
            entry, file = manifest["files"][f"{split}.npy"], path / f"{split}.npy"
            if file.stat().st_size != entry["bytes"]:
                return None
            if verify_checksums and file_checksum(file) != entry["xxh3_128"]:
                return None
            arrays[split] = np.load(file, mmap_mode="r")
            if list(arrays[split].shape) != entry["shape"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if manifest.get("packing_version") != PACKING_VERSION:
        return None
    return CorpusCache(path, BlockArray(arrays["train"]), BlockArray(arrays["validation"]), manifest, built=False)


def _build(cfg: CorpusConfig, sources: list[Source], tokenizer: PreTrainedTokenizerBase, seq_len: int,
           inputs: dict, workdir: Path) -> None:
    processes = cfg.tokenize_processes or default_processes(sources)
    if processes > 1:  # the parent's tokenizer threads do not survive the fork into the workers
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dtype = np.dtype(np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32)
    started = time.perf_counter()
    arrow_dir = workdir / "arrow"
    tokenized = [tokenize_source(s, cfg, tokenizer, arrow_dir / str(i), processes, dtype) for i, s in enumerate(sources)]
    tokenize_seconds = time.perf_counter() - started
    counts = pack_corpus(tokenized, cfg, tokenizer, seq_len, workdir, dtype)
    del tokenized
    shutil.rmtree(arrow_dir, ignore_errors=True)
    files = {}
    for split in SPLITS:
        file = workdir / f"{split}.npy"
        shape = list(np.load(file, mmap_mode="r").shape)
        files[file.name] = {"bytes": file.stat().st_size, "shape": shape, "xxh3_128": file_checksum(file)}
        with open(file, "rb+") as fh:
            os.fsync(fh.fileno())
    manifest = {"packing_version": PACKING_VERSION, "inputs": inputs, "dtype": dtype.name, "files": files,
                "tokenize_processes": processes, "tokenize_seconds": round(tokenize_seconds, 3),
                "build_seconds": round(time.perf_counter() - started, 3), **counts}
    atomic_write_text(workdir / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _remove_stale_builds(root: Path) -> None:
    """Temporary directories of builds whose process (on this host) has died."""
    host = socket.gethostname()
    for tmp in root.glob(".build-*"):
        _, tmp_host, pid, _ = (tmp.name.split("~") + ["", "", ""])[:4]
        if tmp_host == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_blocks(cfg: CorpusConfig, tokenizer: PreTrainedTokenizerBase, seq_len: int,
                   verify_checksums: bool = True) -> CorpusCache:
    """The corpus's packed blocks, from the cache when it holds them intact, else tokenized now."""
    sources = corpus_sources(cfg)
    inputs = cache_inputs(cfg, sources, tokenizer, seq_len)
    root = cache_root(cfg)
    final = root / cache_key(inputs)
    if (cache := open_cache(final, verify_checksums)) is not None:
        return cache
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root)
    workdir = root / f".build-~{socket.gethostname()}~{os.getpid()}~{uuid.uuid4().hex[:8]}"
    workdir.mkdir()
    try:
        _build(cfg, sources, tokenizer, seq_len, inputs, workdir)
        if final.exists():  # partial or corrupt (or just finished by another process): set aside, then replace
            if (cache := open_cache(final, verify_checksums)) is not None:
                return cache
            trash = root / f".trash-{uuid.uuid4().hex[:8]}"
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            workdir.rename(final)
        except OSError:  # another process renamed its build in first: use it
            if (cache := open_cache(final, verify_checksums)) is None:
                raise
            return cache
        fsync_dir(root)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cache = open_cache(final, verify_checksums=False)
    assert cache is not None
    cache.built = True
    return cache
