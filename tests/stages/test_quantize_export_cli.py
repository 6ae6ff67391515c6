"""`pruneofa quantize` (QAT on a task, zeros locked) and `pruneofa export` end to end on tiny models."""

import csv
import json
import random

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from pruneofa.cli import main
from pruneofa.sparsity.pruner import Pruner

WORDS = "good bad great awful fine movie plot actor scene boring fun slow long short music".split()
SEQ = 32


def write_rows(path, seed, n):
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "y"])
        writer.writeheader()
        for _ in range(n):
            writer.writerow({"text": " ".join(rng.choice(WORDS) for _ in range(8)), "y": rng.choice(["neg", "pos"])})
    return path


def task_args(model, out, data, **extra):
    base = {"model": model, "output_dir": out, "train.max_steps": 4, "train.batch_size": 8, "train.warmup_steps": 0,
            "train.log_every": 1, "train.save_every": 0, "train.eval_every": 0, "data.max_seq_len": SEQ,
            "data.task": "csv", "data.train_file": data["train"], "data.validation_file": data["validation"],
            "data.test_file": data["test"], "data.text_columns": "[text]", "data.label_column": "y"}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def linear_weights(path):
    state = load_file(path / "model.safetensors")
    return {k: v for k, v in state.items() if k.startswith("bert.encoder.") and k.endswith(".weight") and v.dim() == 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("q-data")
    return {"train": write_rows(root / "train.csv", 0, 48), "validation": write_rows(root / "val.csv", 1, 12),
            "test": write_rows(root / "test.csv", 2, 10)}


@pytest.fixture(scope="module")
def runs(tiny_models, data, tmp_path_factory, tokenizer):
    """teacher (dense finetune) -> sparse task model (80% one-shot on the teacher) -> quantize."""
    root = tmp_path_factory.mktemp("q-runs")
    teacher = root / "teacher"
    assert main(["finetune", *task_args(tiny_models["bert"], teacher, data, **{"train.lr": 1e-3})]) == 0
    model = transformers.AutoModelForSequenceClassification.from_pretrained(teacher)
    Pruner(model, method="oneshot", target_sparsity=0.8, start_step=0).finalize()
    sparse = root / "sparse"
    model.save_pretrained(sparse)
    tokenizer.save_pretrained(sparse)
    qat = root / "int8"
    extra = {"train.lr": 1e-2, "train.save_every": 2}  # a mid-run checkpoint of the QAT model too
    assert main(["quantize", *task_args(sparse, qat, data, teacher=teacher, **extra)]) == 0
    return {"teacher": teacher, "sparse": sparse, "qat": qat}


def test_quantize_keeps_every_zero_and_writes_qat_metrics(runs):
    before, after = linear_weights(runs["sparse"]), linear_weights(runs["qat"])
    assert before.keys() == after.keys() and before
    moved = False
    for name in before:
        assert torch.equal(before[name] == 0, after[name] == 0), name  # same zeros, no new ones
        moved |= not torch.equal(before[name], after[name])
    assert moved  # the non-zeros trained
    metrics = json.loads((runs["qat"] / "metrics.json").read_text())
    assert {"validation/accuracy", "test/accuracy", "sparsity", "qat_layers"} <= set(metrics)
    assert metrics["sparsity"] == pytest.approx(0.8, abs=0.01) and metrics["qat_layers"] > 0
    assert (runs["qat"] / "qat_state.safetensors").is_file()
    meta = json.loads((runs["qat"] / "pruneofa.json").read_text())
    assert meta["stage"] == "quantize" and meta["recipe"]["pruning"]["method"] == "lock"
    assert meta["recipe"]["distill"]["alpha_kd"] == 0.5


def test_eval_reads_a_qat_dir_and_reproduces_the_stages_scores(runs, capsys):
    """The stage's validation score is fit's last evaluation, its test score the stage's own: the saved QAT model
    scores the same from disk."""
    assert main(["eval", str(runs["qat"])]) == 0
    scored = json.loads((runs["qat"] / "eval_metrics.json").read_text())
    metrics = json.loads((runs["qat"] / "metrics.json").read_text())
    for key in ("validation/accuracy", "test/accuracy"):
        assert scored[key] == pytest.approx(metrics[key], abs=1e-9), key


def test_export_hf_and_compressed_round_trip(runs, tmp_path):
    from pruneofa.export import load_compressed

    assert main(["export", str(runs["qat"]), "--format", "hf", "--output-dir", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert main(["export", str(runs["qat"]), "--format", "compressed", "--int8", "--output-dir", str(tmp_path / "c")]) == 0
    loaded = load_compressed(tmp_path / "c")
    w = dict(loaded.named_parameters())
    for name, ref in dict(hf.named_parameters()).items():
        if name.startswith("bert.encoder.") and name.endswith(".weight") and ref.dim() == 2:
            assert torch.equal(w[name] == 0, ref == 0)
            # int8 values with the QAT scales: the dequantized weights the QAT model computes with
            assert torch.allclose(w[name], ref, atol=1e-6)


def test_export_int8_onnx_with_the_qat_scales_runs_in_onnxruntime(runs, tmp_path):
    # int8 needs observed input ranges: fails if the QAT observers saw no data during quantize
    # (fp32 ONNX is the same code path minus the QDQ layers; tests/export covers it)
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    assert main(["export", str(runs["qat"]), "--format", "onnx", "--output-dir", str(out), "--int8"]) == 0
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feed = {"input_ids": np.array([[101, 2204, 3185, 102, 0]], dtype=np.int64),
            "attention_mask": np.array([[1, 1, 1, 1, 0]], dtype=np.int64),
            "token_type_ids": np.zeros((1, 5), dtype=np.int64)}
    (logits,) = session.run(None, {n: feed[n] for n in names})
    assert logits.shape == (1, 2) and np.isfinite(logits).all()
    assert (out / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["MISSING", "--format", "hf"], "does not exist"),
    (["QAT", "--format", "tflite"], "unknown export format"),
    (["QAT", "--format", "compressed", "--dtype", "int4"], "unknown dtype"),
    (["QAT", "--format", "hf", "--int8"], "fp32"),
    (["SPARSE", "--format", "onnx", "--int8"], "QAT model"),
])
def test_export_bad_input_is_one_line_exit_2_and_leaves_no_output(runs, tmp_path, capsys, argv, message):
    paths = {"MISSING": str(tmp_path / "nope"), "QAT": str(runs["qat"]), "SPARSE": str(runs["sparse"])}
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["export", *[paths.get(a, a) for a in argv], "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_quantize_refuses_a_model_without_task_head(tiny_models, data, runs, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", *task_args(tiny_models["bert"], out, data, teacher=runs["teacher"])]) == 2
    assert "no trained task head" in capsys.readouterr().err and not out.exists()


def test_shipped_quantize_recipe_validates_and_names_its_command():
    from pruneofa.config.loader import find_recipe
    from pruneofa.stages.registry import load_recipe

    recipe = load_recipe("quantize", None, [])
    assert recipe.stage == "quantize" and recipe.pruning.method == "lock" and recipe.teacher
    assert (recipe.distill.alpha_ce, recipe.distill.alpha_kd, recipe.distill.temperature) == (0.5, 0.5, 2.0)
    assert recipe.output_dir == "runs/offline/rt-sparse-85-int8" and recipe.data.task == "rotten_tomatoes"
    assert "pruneofa quantize" in find_recipe("quantize", None).read_text().split("\n\n")[0]


def test_int8_embeddings_cost_scores_both_exports_of_the_qat_model(runs, tmp_path, monkeypatch):
    """studies/int8_embeddings_cost.py: the demo's choice of int8 embeddings rests on it."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "studies"))
    import int8_embeddings_cost

    sys.modules.pop("int8_embeddings_cost", None)
    result = int8_embeddings_cost.main([str(runs["qat"]), "--json", str(tmp_path / "cost.json")])
    fp32, int8 = result["rows"]["embeddings fp32"], result["rows"]["embeddings int8"]
    assert int8["file_bytes"] < fp32["file_bytes"]  # the tables shrink about 4x
    for split in ("validation/accuracy", "test/accuracy"):
        assert 0.0 <= fp32[split] <= 1.0 and 0.0 <= int8[split] <= 1.0
        assert result["cost_points"][split] == pytest.approx(100 * (fp32[split] - int8[split]), abs=0.01)
    assert json.loads((tmp_path / "cost.json").read_text())["cost_points"] == result["cost_points"]
    assert torch.is_grad_enabled()  # the caller's autograd state is left as it was
