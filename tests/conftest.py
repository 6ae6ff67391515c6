"""Shared fixtures: tiny random models of each family, saved as model directories, and a corpus."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import transformers

from pruneofa.data.assets import asset_path

FAMILIES = ["bert", "distilbert", "roberta", "gpt2"]


@pytest.fixture(scope="session", autouse=True)
def corpus_cache(tmp_path_factory):
    """The LM stages' packed-corpus cache (data.block_cache) in a temporary folder, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("corpus-cache")
        patch.setenv("PRUNEOFA_CORPUS_CACHE", str(path))
        yield path
SEQ = 32


def tiny_config(family: str, vocab_size: int) -> transformers.PretrainedConfig:
    if family == "bert":
        return transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=64)
    if family == "distilbert":
        return transformers.DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                             max_position_embeddings=64)
    if family == "roberta":
        return transformers.RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64, max_position_embeddings=SEQ + 4, pad_token_id=0)
    if family == "gpt2":
        return transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                       bos_token_id=101, eos_token_id=102, pad_token_id=0)
    raise ValueError(family)


@pytest.fixture(scope="session")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(asset_path("offline/minilm-l6"))


def save_tiny_model(path: Path, family: str, tokenizer, with_head: bool = True) -> Path:
    torch.manual_seed(0)
    config = tiny_config(family, len(tokenizer))
    if family == "gpt2":
        model = transformers.GPT2LMHeadModel(config)
    elif with_head:
        model = transformers.AutoModelForMaskedLM.from_config(config)
    else:  # a bare encoder, like the offline MiniLM: the teacher stage must create the head
        model = transformers.AutoModel.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    models = {f: save_tiny_model(root / f, f, tokenizer) for f in FAMILIES}
    models["bert-headless"] = save_tiny_model(root / "bert-headless", "bert", tokenizer, with_head=False)
    return models


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    words = ("the model prunes weights while a teacher distills its knowledge into the student network on "
             "text from wikipedia about music history science and art").split()
    rng = random.Random(0)
    paragraphs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) + "." for _ in range(120)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(paragraphs))
    return path


def tiny_overrides(model: Path, corpus: Path, out: Path, **extra) -> list[str]:
    """Overrides that shrink any LM recipe to seconds."""
    base = {"model": str(model), "output_dir": str(out), "data.train_files": f"[{corpus}]",
            "train.max_steps": 6, "train.batch_size": 4, "train.seq_len": SEQ, "train.warmup_steps": 0,
            "train.log_every": 1, "train.save_every": 3, "train.eval_every": 0, "train.eval_batches": 2,
            "data.validation_fraction": 0.1}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
