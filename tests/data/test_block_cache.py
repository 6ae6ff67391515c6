"""The corpus cache: packed blocks on disk, keyed by what they depend on, rebuilt when damaged, read by index."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from pruneofa.data import block_cache as B
from pruneofa.data.corpus import CorpusConfig, held_out_mask, split_documents
from pruneofa.errors import UserError
from pruneofa.train.sampling import batch_indices, rank_indices

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()
SEQ = 16


def tiny_tokenizer(extra_words: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS, *extra_words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]")


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(n)]


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(documents(200)))
    return path


def config(files, tmp_path, **extra) -> CorpusConfig:
    return CorpusConfig(**{"train_files": [str(f) for f in files], "cache_dir": str(tmp_path / "cache"),
                           "validation_fraction": 0.1, **extra})


def reference_blocks(docs: list[str], tokenizer, seq_len: int) -> torch.Tensor:
    """The packing the stages always did, in plain Python: [CLS] + (doc + [SEP])* cut into bodies + [SEP]."""
    stream = [t for d in docs for t in tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]]
    body = seq_len - 2
    return torch.tensor([[2, *stream[i * body:(i + 1) * body], 3] for i in range(len(stream) // body)])


def test_blocks_are_the_documents_packed_with_the_held_out_ones_apart(corpus, tmp_path):
    tok = tiny_tokenizer()
    cache = B.prepare_blocks(config([corpus], tmp_path), tok, SEQ)
    train_docs, val_docs = split_documents(documents(200), 0.1, 0)
    assert cache.built and cache.train.array.dtype == np.uint16
    assert torch.equal(cache.train.rows(list(range(len(cache.train)))), reference_blocks(train_docs, tok, SEQ))
    assert torch.equal(cache.validation.rows(list(range(len(cache.validation)))), reference_blocks(val_docs, tok, SEQ))
    assert cache.manifest["documents"] == {"train": 180, "validation": 20}


def test_every_file_type_and_a_document_cap(tmp_path):
    import pandas as pd

    docs = documents(60)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs[:20]))
    pd.DataFrame({"body": docs[20:40]}).to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame({"body": docs[40:]}).to_parquet(tmp_path / "c.parquet")
    files = [tmp_path / "a.jsonl", tmp_path / "b.csv", tmp_path / "c.parquet"]
    tok = tiny_tokenizer()
    cache = B.prepare_blocks(config(files, tmp_path, text_column="body", max_documents=50), tok, SEQ)
    train_docs, _ = split_documents(docs[:50], 0.1, 0)
    assert torch.equal(cache.train.rows(list(range(len(cache.train)))), reference_blocks(train_docs, tok, SEQ))
    with pytest.raises(UserError, match="no column 'text'"):
        B.prepare_blocks(config(files, tmp_path), tok, SEQ)


def test_the_second_run_reuses_the_cache_without_tokenizing(corpus, tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    first = B.prepare_blocks(config([corpus], tmp_path), tok, SEQ)
    manifest = first.path / B.MANIFEST
    stamp = manifest.stat().st_mtime_ns

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(B, "tokenize_source", no_tokenizing)
    again = B.prepare_blocks(config([corpus], tmp_path), tok, SEQ)
    assert not again.built and again.path == first.path and manifest.stat().st_mtime_ns == stamp
    assert np.array_equal(again.train.array, first.train.array)


def test_the_key_follows_the_files_the_tokenizer_seq_len_and_the_split(corpus, tmp_path):
    tok = tiny_tokenizer()
    key = lambda cfg, t=tok, seq=SEQ: B.cache_key(B.cache_inputs(cfg, B.corpus_sources(cfg), t, seq))  # noqa: E731
    base = key(config([corpus], tmp_path))
    assert key(config([corpus], tmp_path)) == base
    assert key(config([corpus], tmp_path), seq=SEQ * 2) != base
    assert key(config([corpus], tmp_path), t=tiny_tokenizer(("omega",))) != base
    assert key(config([corpus], tmp_path, split_seed=1)) != base
    assert key(config([corpus], tmp_path, validation_fraction=0.2)) != base
    os.utime(corpus, ns=(corpus.stat().st_atime_ns, corpus.stat().st_mtime_ns + 10**9))
    assert key(config([corpus], tmp_path)) != base
    corpus.write_text(corpus.read_text() + "\n\nomega")
    assert key(config([corpus], tmp_path)) != base


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "no manifest", "bad manifest"])
def test_a_damaged_cache_is_detected_and_rebuilt_whole(corpus, tmp_path, damage):
    tok = tiny_tokenizer()
    first = B.prepare_blocks(config([corpus], tmp_path), tok, SEQ)
    expected = np.array(first.train.array)
    train_file = first.path / "train.npy"
    del first
    if damage == "flip a byte":
        data = bytearray(train_file.read_bytes())
        data[-5] ^= 0xFF
        train_file.write_bytes(bytes(data))
    elif damage == "truncate":
        train_file.write_bytes(train_file.read_bytes()[:-64])
    elif damage == "no manifest":
        (train_file.parent / B.MANIFEST).unlink()
    else:
        (train_file.parent / B.MANIFEST).write_text("{")
    assert B.open_cache(train_file.parent) is None
    rebuilt = B.prepare_blocks(config([corpus], tmp_path), tok, SEQ)
    assert rebuilt.built and rebuilt.path == train_file.parent
    assert np.array_equal(rebuilt.train.array, expected)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [rebuilt.path.name]  # no temp or trash left


def test_a_failed_build_leaves_nothing_and_a_dead_builders_leftovers_are_removed(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n  \n\n")
    with pytest.raises(UserError, match="holds no text"):
        B.prepare_blocks(config([blank], tmp_path), tiny_tokenizer(), SEQ)
    assert list((tmp_path / "cache").iterdir()) == []
    stale = tmp_path / "cache" / f".build-~{B.socket.gethostname()}~{2**22 + 12345}~abcd"  # no such pid
    stale.mkdir()
    (tmp_path / "short.txt").write_text("alpha beta")
    with pytest.raises(UserError, match="shorter than one block"):
        B.prepare_blocks(config([tmp_path / "short.txt"], tmp_path), tiny_tokenizer(), SEQ)
    assert list((tmp_path / "cache").iterdir()) == []


def test_two_processes_tokenize_to_the_same_blocks(corpus, tmp_path):
    tok = tiny_tokenizer()
    one = B.prepare_blocks(config([corpus], tmp_path / "1", tokenize_processes=1), tok, SEQ)
    two = B.prepare_blocks(config([corpus], tmp_path / "2", tokenize_processes=2), tok, SEQ)
    assert two.manifest["tokenize_processes"] == 2
    assert np.array_equal(one.train.array, two.train.array)
    assert np.array_equal(one.validation.array, two.validation.array)


def test_the_held_out_split_is_the_seeded_shuffle_of_documents():
    for n, fraction, seed in ((1000, 0.05, 0), (37, 0.2, 3), (1, 0.1, 0)):
        order = list(range(n))
        random.Random(seed).shuffle(order)  # the split every earlier release made
        expected = set(order[: max(1, round(fraction * n))]) if n > 1 else set()
        assert set(np.flatnonzero(held_out_mask(n, fraction, seed))) == expected
    assert not held_out_mask(50, 0.0, 0).any()


class RecordingBlocks(B.BlockArray):
    def __init__(self, array):
        super().__init__(array)
        self.read: list[int] = []

    def rows(self, indices):
        self.read.extend(indices)
        return super().rows(indices)


def test_each_rank_reads_only_its_own_disjoint_rows(corpus, tmp_path):
    cache = B.prepare_blocks(config([corpus], tmp_path), tiny_tokenizer(), SEQ)
    n, batch, world = len(cache.train), 8, 2
    for step in (1, 2, 7):
        readers = [RecordingBlocks(cache.train.array) for _ in range(world)]
        for rank, reader in enumerate(readers):
            reader.rows(rank_indices(step, n, batch, 42, rank, world))
        assert not set(readers[0].read) & set(readers[1].read)
        assert readers[0].read + readers[1].read == batch_indices(step, n, batch, 42)


def test_a_resumed_run_reads_the_rows_the_uninterrupted_run_would(corpus, tmp_path):
    cfg, tok = config([corpus], tmp_path), tiny_tokenizer()
    first = B.prepare_blocks(cfg, tok, SEQ)
    uninterrupted = [first.train.rows(batch_indices(step, len(first.train), 4, 42)) for step in range(1, 9)]
    reopened = B.prepare_blocks(cfg, tok, SEQ)  # a new process after the interruption at step 5: no loader state
    assert all(torch.equal(reopened.train.rows(batch_indices(step, len(reopened.train), 4, 42)), uninterrupted[step - 1])
               for step in range(6, 9))


def test_a_hub_dataset_is_streamed_to_disk_then_packed_like_files(corpus, tmp_path, monkeypatch):
    import datasets

    docs = documents(80)
    (tmp_path / "hub.jsonl").write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    calls, load = [], datasets.load_dataset

    def offline_hub(name, config=None, split=None, streaming=False):  # the hub, played by a local file
        calls.append((name, config, split, streaming))
        return load("json", data_files=str(tmp_path / "hub.jsonl"), split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", offline_hub)
    cfg = CorpusConfig(dataset="org/corpus", dataset_config="en", text_column="body", cache_dir=str(tmp_path / "c"),
                       validation_fraction=0.1)
    tok = tiny_tokenizer()
    cache = B.prepare_blocks(cfg, tok, SEQ)
    assert calls == [("org/corpus", "en", "train", True)]
    train_docs, _ = split_documents(docs, 0.1, 0)
    assert torch.equal(cache.train.rows(list(range(len(cache.train)))), reference_blocks(train_docs, tok, SEQ))
    other = B.cache_key(B.cache_inputs(cfg.model_copy(update={"split": "other"}), B.corpus_sources(
        cfg.model_copy(update={"split": "other"})), tok, SEQ))
    assert other != cache.path.name
