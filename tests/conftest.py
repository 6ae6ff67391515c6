"""Shared fixtures: tiny random models of each family, saved as model directories, and a corpus."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from pruneofa.data.assets import asset_path

FAMILIES = ["bert", "distilbert", "roberta", "gpt2"]
# the encoders of 2026 (issue #14), named by their model_type; tests/test_families.py runs every stage on them
ENCODER_FAMILIES = ["modernbert", "deberta-v2", "xlm-roberta"]


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
    # ModernBERT: layer 0 global attention, layer 1 local (a window of 4 + 1 + 4 tokens); weights of std
    # 0.1, as its GeGLU FFN (a product of two projections) adds next to nothing at the default 0.02
    if family == "modernbert":
        return transformers.ModernBertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                             global_attn_every_n_layers=2, local_attention=8, initializer_range=0.1,
                                             pad_token_id=0, bos_token_id=101, eos_token_id=102, cls_token_id=101, sep_token_id=102)
    if family == "deberta-v2":  # DeBERTa-v3's settings: relative attention with shared Q/K position projections
        return transformers.DebertaV2Config(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                            relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=16,
                                            norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
                                            type_vocab_size=0, pad_token_id=0)
    if family == "xlm-roberta":
        return transformers.XLMRobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64,
                                             max_position_embeddings=SEQ + 4, pad_token_id=0)
    raise ValueError(family)


def tiny_lm(family: str, vocab_size: int = 50, **config: Any) -> transformers.PreTrainedModel:
    """A tiny random LM of `family` (seeded), in memory: causal for gpt2, masked otherwise; `config` overrides
    attributes of its config."""
    torch.manual_seed(0)
    auto = transformers.AutoModelForCausalLM if family == "gpt2" else transformers.AutoModelForMaskedLM
    settings = tiny_config(family, vocab_size)
    for name, value in config.items():
        setattr(settings, name, value)
    return auto.from_config(settings)


def padded_batch(vocab_size: int = 50) -> dict[str, torch.Tensor]:
    """Two rows of 7 token ids (seeded), the second padded at its last two positions."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


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
    models = {f: save_tiny_model(root / f, f, tokenizer) for f in FAMILIES + ENCODER_FAMILIES}
    models["bert-headless"] = save_tiny_model(root / "bert-headless", "bert", tokenizer, with_head=False)
    return models


def make_sentence_transformers_dir(model_dir: Path, out: Path, pooling: dict | None = None,
                                   normalize: bool = True) -> Path:
    """A copy of `model_dir` made a sentence-transformers directory, its files as sentence-transformers 6
    writes them (`pooling`: the 1_Pooling config; default mean pooling in the current format)."""
    shutil.copytree(model_dir, out)
    width = json.loads((model_dir / "config.json").read_text())["hidden_size"]
    modules = [("", "sentence_transformers.base.modules.transformer.Transformer"),
               ("1_Pooling", "sentence_transformers.sentence_transformer.modules.pooling.Pooling")]
    if normalize:
        modules.append(("2_Normalize", "sentence_transformers.base.modules.normalize.Normalize"))
        (out / "2_Normalize").mkdir()
    (out / "modules.json").write_text(json.dumps([{"idx": i, "name": str(i), "path": path, "type": kind}
                                                  for i, (path, kind) in enumerate(modules)]))
    (out / "1_Pooling").mkdir()
    pooling = pooling or {"embedding_dimension": width, "pooling_mode": "mean", "include_prompt": True}
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": SEQ, "do_lower_case": False}))
    return out


@pytest.fixture(scope="session")
def tiny_sentence_transformers(tiny_models, tmp_path_factory) -> Path:
    """The bare tiny BERT as a sentence-transformers directory: mean pooling, then Normalize."""
    return make_sentence_transformers_dir(tiny_models["bert-headless"], tmp_path_factory.mktemp("st") / "bert-st")


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


@pytest.fixture
def sparse_qat_bert():
    """Tiny BERT, 90% sparse with the pattern locked, trained 3 QAT steps (per-tensor scales): the export tests'
    and the compressed-format tests' model."""
    from tests.export.helpers import prune, qat_train, tiny_bert

    model = tiny_bert()
    pruner = prune(model)
    return qat_train(model), pruner
