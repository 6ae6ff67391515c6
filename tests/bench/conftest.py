"""Tiny 90%-sparse models saved as the model directories `pruneofa bench` reads: BERTs, a plain one (as
finetune/transfer write) and a QAT one (as `pruneofa quantize` writes), and a GPT-2 LM."""

from __future__ import annotations

from pathlib import Path

import pytest

from pruneofa.quantization.checkpoint import save_qat
from tests.export.helpers import prune, qat_train, tiny_bert
from tests.runtime.conftest import tiny_gpt2

SEQ = 16  # the tiny config has 64 positions


@pytest.fixture(scope="session")
def sparse_dir(tmp_path_factory) -> Path:
    model = tiny_bert()
    prune(model).finalize()
    path = tmp_path_factory.mktemp("bench") / "sparse"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def structured_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny BERT with half its heads and FFN neurons pruned, saved masked; its `export --compact`)."""
    from pruneofa import Pruner
    from pruneofa.export.compact import export_compact_hf

    model = tiny_bert(seed=2)
    Pruner(model, pattern="structured", method="oneshot", start_step=0, ffn_sparsity=0.5,
           head_sparsity=0.5).finalize()  # masks folded: what a stage saves
    root = tmp_path_factory.mktemp("bench")
    model.save_pretrained(root / "masked")
    return root / "masked", export_compact_hf(model, root / "compact")


@pytest.fixture(scope="session")
def qat_dir(tmp_path_factory) -> Path:
    model = tiny_bert(seed=1)
    prune(model)
    path = tmp_path_factory.mktemp("bench") / "qat"
    save_qat(qat_train(model, steps=2), path)
    return path


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    """A tiny GPT2LMHeadModel pruned to 90%, for --decode."""
    path = tmp_path_factory.mktemp("bench") / "gpt2"
    tiny_gpt2().save_pretrained(path)
    return path
