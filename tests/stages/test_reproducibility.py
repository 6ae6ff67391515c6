"""A run is a function of its recipe and seed: stages seed before they build anything, so new heads,
data order and dropout all follow `seed`, and the same recipe gives bit-identical weights and metrics."""

import json

import pytest
import torch
from safetensors.torch import load_file

from pruneofa.cli import main
from tests.conftest import SEQ, tiny_overrides
from tests.stages.test_task_stages import args, classification_rows, write_csv


def weights(out):
    return load_file(out / "model.safetensors")


def metrics(out):
    return json.loads((out / "metrics.json").read_text())


def assert_identical(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert metrics(a) == metrics(b)


@pytest.mark.slow
def test_lm_stage_with_a_new_head_is_bit_identical_for_one_seed(tiny_models, corpus_file, tmp_path):
    # bert-headless has no MLM head: the teacher stage creates one, which must follow the seed too
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        runs[name] = tmp_path / name
        assert main(["teacher", *tiny_overrides(tiny_models["bert-headless"], corpus_file, runs[name],
                                                seed=seed, **{"train.max_steps": 3})]) == 0
    assert_identical(runs["a"], runs["b"])
    head = "cls.predictions.transform.dense.weight"
    assert not torch.equal(weights(runs["a"])[head], weights(runs["c"])[head])


@pytest.mark.slow
def test_task_stage_with_a_new_head_is_bit_identical_for_one_seed(tiny_models, tmp_path):
    train = write_csv(tmp_path / "train.csv", classification_rows(0, 32))
    val = write_csv(tmp_path / "val.csv", classification_rows(1, 8))
    task = {"data.task": "csv", "data.train_file": train, "data.validation_file": val, "data.text_columns": "[text]",
            "data.label_column": "y", "train.lr": 1e-3, "seed": 0}
    outs = [tmp_path / name for name in ("a", "b")]
    for out in outs:  # dropout is on while training (hidden_dropout_prob 0.1): it must follow the seed
        assert main(["finetune", *args(tiny_models["bert"], out, **task)]) == 0
    assert_identical(*outs)
    # padded reviews: the count is the non-padding tokens, below steps x batch x the longest batch
    assert 0 < metrics(outs[0])["train_tokens"] < 4 * 8 * 32


@pytest.mark.slow
def test_teacher_trains_a_new_head_alone_first_and_reports_perplexity_before_and_after(
        tiny_models, corpus_file, tmp_path):
    out = tmp_path / "teacher"
    steps = 5
    assert main(["teacher", *tiny_overrides(tiny_models["bert-headless"], corpus_file, out, **{
        "head.steps": steps, "head.lr": 1e-2, "train.max_steps": 2})]) == 0
    m = metrics(out)
    assert m["head/eval_perplexity"] < m["initial/eval_perplexity"]
    assert {"initial/eval_loss", "head/eval_loss", "eval_perplexity"} <= set(m)
    assert m["train_tokens"] == (steps + 2) * 4 * SEQ  # packed blocks: every update sees batch x seq_len tokens
    # the encoder was frozen while the head trained: the head phase's checkpoint keeps its weights
    after_head = load_file(out / "head" / "checkpoints" / f"step-{steps}" / "model.safetensors")
    original = load_file(tiny_models["bert-headless"] / "model.safetensors")
    encoder = [k for k in after_head if k.startswith("bert.")]
    assert encoder and all(torch.equal(after_head[k], original[k.removeprefix("bert.")]) for k in encoder)
    # ... and then the whole model trained on
    final = weights(out)
    assert not torch.equal(final["bert.encoder.layer.0.attention.self.query.weight"],
                           original["encoder.layer.0.attention.self.query.weight"])
