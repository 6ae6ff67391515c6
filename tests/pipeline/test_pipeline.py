"""`pruneofa run` / `pruneofa demo`: stage order, output passing, resume, and the report, on tiny models."""

import csv
import json
import random
import re

import pytest
import yaml

from pruneofa.cli import main
from pruneofa.config.loader import parse_overrides
from pruneofa.modeldir import inspect_dir
from pruneofa.pipeline.commands import COMMANDS
from pruneofa.pipeline.report import fmt
from pruneofa.pipeline.runner import PipelineRunner, load_pipeline

SEQ = 32
WORDS = "good bad great awful fine movie plot actor scene boring fun slow long short music".split()
STEPS = ["teacher", "prune", "retrieval-dense", "retrieval-sparse", "rt-teacher", "rt-sparse", "rt-int8",
         "export-sparse", "export-int8", "eval", "bench"]
TRAINING_STEPS = ["teacher", "prune", "rt-teacher", "rt-sparse", "rt-int8"]
RETRIEVAL_TINY = {"retrieval.max_queries": 12, "retrieval.max_seq_len": SEQ}  # the offline summaries, a few of them


def write_csv(path, seed, n):
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "y"])
        w.writeheader()
        w.writerows({"text": " ".join(rng.choice(WORDS) for _ in range(8)), "y": rng.choice(["neg", "pos"])}
                    for _ in range(n))
    return path


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-task")
    return {"train": write_csv(root / "train.csv", 0, 40), "validation": write_csv(root / "val.csv", 1, 12),
            "test": write_csv(root / "test.csv", 2, 10)}


def lm_tiny(corpus):
    return {"data.train_files": f"[{corpus}]", "data.validation_fraction": 0.1, "train.max_steps": 4,
            "train.batch_size": 4, "train.seq_len": SEQ, "train.warmup_steps": 0, "train.log_every": 1,
            "train.save_every": 2, "train.eval_every": 0, "train.eval_batches": 2}


def task_tiny(files):
    return {"data.task": "csv", "data.train_file": str(files["train"]), "data.validation_file": str(files["validation"]),
            "data.test_file": str(files["test"]), "data.text_columns": "[text]", "data.label_column": "y",
            "data.max_seq_len": SEQ, "data.max_eval_samples": "null", "train.max_steps": 4, "train.batch_size": 8,
            "train.warmup_steps": 0, "train.log_every": 1, "train.save_every": 2, "train.eval_every": 0}


def demo_overrides(model, corpus, files):
    """The shipped demo's --quick section, shrunk to tiny models and data (quick wins over a step's overrides)."""
    per_step = {
        "teacher": {"model": model, **lm_tiny(corpus)},
        "prune": {**lm_tiny(corpus), "pruning.target_step": 2, "pruning.stop_step": 3, "pruning.frequency": 1},
        "rt-teacher": {**task_tiny(files), "train.lr": 1e-3},
        "rt-sparse": task_tiny(files),
        "rt-int8": task_tiny(files),
        "eval": {"data.max_eval_samples": "null"},
        "retrieval-dense": RETRIEVAL_TINY,
        "retrieval-sparse": RETRIEVAL_TINY,
        "bench": {"seq_len": SEQ, "rounds": 2, "warmup": 1},
    }
    return [f"quick.{step}.{k}={v}" for step, values in per_step.items() for k, v in values.items()]


@pytest.fixture(scope="module")
def demo_run(tiny_models, corpus_file, task_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    argv = ["demo", "--quick", "--output-dir", str(out), *demo_overrides(tiny_models["bert"], corpus_file, task_files)]
    assert main(argv) == 0
    return out, argv


def meta(path):
    return json.loads((path / "pruneofa.json").read_text())


def test_demo_runs_every_step_in_order_and_passes_outputs_on(demo_run):
    out, _ = demo_run
    state = json.loads((out / "pipeline.json").read_text())
    assert state["order"] == STEPS and state["quick"] is True
    assert all(state["steps"][s]["status"] == "done" for s in STEPS)
    assert [meta(out / s)["stage"] for s in TRAINING_STEPS] == ["teacher", "prune", "finetune", "transfer", "quantize"]
    assert meta(out / "prune")["recipe"]["model"] == str(out / "teacher")
    assert meta(out / "rt-teacher")["recipe"]["model"] == str(out / "teacher")
    transfer = meta(out / "rt-sparse")["recipe"]
    assert transfer["model"] == str(out / "prune") and transfer["teacher"] == str(out / "rt-teacher")
    pruning = meta(out / "prune")["recipe"]["pruning"]
    assert pruning["target_sparsity"] == 0.85 and pruning["criterion"] == "wanda"  # from demo.yaml itself
    quantize = meta(out / "rt-int8")["recipe"]
    assert quantize["model"] == str(out / "rt-sparse") and quantize["teacher"] == str(out / "rt-teacher")
    for step, model in (("export-sparse", "rt-sparse"), ("export-int8", "rt-int8")):
        marker = json.loads((out / step / "export.json").read_text())
        assert marker["model"] == str(out / model) and marker["format"] == "compressed"
        assert list((out / step).glob("*.safetensors")) and not list(out.glob(f".{step}.partial-*"))
    scored = json.loads((out / "eval" / "eval_metrics.json").read_text())
    assert scored["test/accuracy"] == json.loads((out / "rt-sparse" / "metrics.json").read_text())["test/accuracy"]


def test_report_figures_match_report_json_and_the_stages_metrics(demo_run, capsys):
    out, _ = demo_run
    report_dir = out / "report"
    for name in ("report.md", "report.json", "pruning_schedule.png", "training_curves.png", "layer_sparsity.png",
                 "accuracy_vs_size.png"):
        assert (report_dir / name).is_file() and (report_dir / name).stat().st_size > 0, name
    report = json.loads((report_dir / "report.json").read_text())
    md = (report_dir / "report.md").read_text()
    dense, sparse, int8 = report["rows"]
    files = {"rt-teacher": out / "rt-teacher" / "model.safetensors", "rt-sparse": out / "export-sparse",
             "rt-int8": out / "export-int8"}
    for row, step in ((dense, "rt-teacher"), (sparse, "rt-sparse"), (int8, "rt-int8")):
        metrics = json.loads((out / step / "metrics.json").read_text())
        assert row["metric"] == "test/accuracy" and row["accuracy"] == metrics["test/accuracy"]
        assert row["sparsity"] == inspect_dir(out / step)["overall"]
        weights = [files[step]] if files[step].is_file() else list(files[step].glob("*.safetensors"))
        assert row["size_mb"] == sum(f.stat().st_size for f in weights) / 1e6
        table_row = next(line for line in md.splitlines() if line.startswith(f"| {row['label']} |"))
        for key in ("accuracy", "sparsity", "size_mb"):
            assert f"| {fmt(row[key], key)} |" in table_row
        assert f"| {fmt(row['ratio']['accuracy'], 'ratio')} |" in table_row
    assert sparse["sparsity"] > 0.7 and dense["sparsity"] == 0.0 and int8["sparsity"] == sparse["sparsity"]
    assert int8["size_mb"] < sparse["size_mb"] < dense["size_mb"]  # the compressed exports really shrink
    assert sparse["file"].startswith("compressed fp32") and int8["file"].startswith("compressed int8")
    summary = json.loads((out / "bench" / "bench.json").read_text())["summary"]
    assert f"latency b1 s{SEQ} (ms)" in md
    assert f"sparse int8 engine runs {summary['dense_fp32_ms'] / summary['sparse_int8_ms']:.2f}x" in md
    for row, key in ((dense, "dense_fp32_ms"), (sparse, "sparse_fp32_ms"), (int8, "sparse_int8_ms")):
        assert row["latency_ms"] == summary[key] > 0
        table_row = next(line for line in md.splitlines() if line.startswith(f"| {row['label']} |"))
        assert f"| {fmt(row['latency_ms'], 'latency_ms')} |" in table_row


def test_report_shows_retrieval_of_the_dense_teacher_and_the_sparse_pre_trained_model(demo_run):
    out, _ = demo_run
    report = json.loads((out / "report" / "report.json").read_text())
    md = (out / "report" / "report.md").read_text()
    dense, sparse = report["retrieval"]
    for row, step, model in ((dense, "retrieval-dense", "teacher"), (sparse, "retrieval-sparse", "prune")):
        metrics = json.loads((out / step / "eval_metrics.json").read_text())
        assert metrics["kind"] == "retrieval" and metrics["n_queries"] == 12 and row["step"] == step
        assert metrics["sparsity"] == inspect_dir(out / model)["overall"]  # the encoder that was scored
        table_row = next(line for line in md.splitlines() if line.startswith(f"| {row['label']} | {step} |"))
        for key in ("recall@1", "recall@10"):
            assert row[key] == metrics[key]
            ratio = metrics[key] / dense[key] if dense[key] else None  # a dense recall of 0 has no ratio
            assert row["ratio"][key] == (ratio if ratio is None else pytest.approx(ratio))
            assert f"| {100 * metrics[key]:.2f} |" in table_row
    assert sparse["sparsity"] > 0.7 and dense["sparsity"] == 0.0
    assert "## Retrieval without a task teacher" in md and "retrieval-dense:" not in md  # not repeated as a task eval


def test_rerun_skips_every_finished_step(demo_run, capsys):
    out, argv = demo_run
    before = {s: (out / s / "pruneofa.json").stat().st_mtime_ns for s in TRAINING_STEPS}
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.count("done in an earlier run, skipped") == len(STEPS)
    assert before == {s: (out / s / "pruneofa.json").stat().st_mtime_ns for s in TRAINING_STEPS}
    assert "| dense (task teacher) |" in captured.out and f"report: {out / 'report' / 'report.md'}" in captured.out
    assert "| sparse (pre-trained) | retrieval-sparse |" in captured.out


def write_pipeline(path, steps, out):
    path.write_text(yaml.safe_dump({"output_dir": str(out), "steps": steps}, sort_keys=False))
    return path


def test_failed_step_is_fixed_and_rerun_while_finished_steps_are_skipped(tiny_models, corpus_file, task_files,
                                                                         tmp_path, capsys):
    out = tmp_path / "run"
    steps = {"lm": {"stage": "teacher", "overrides": {"model": str(tiny_models["bert"]), **lm_tiny(str(corpus_file))}},
             "ft": {"stage": "finetune",
                    "overrides": {"model": "${lm}", **task_tiny(task_files), "data.train_file": str(tmp_path / "nope.csv")}}}
    recipe = write_pipeline(tmp_path / "p.yaml", steps, out)
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: step 'ft' (finetune):")
    state = json.loads((out / "pipeline.json").read_text())
    assert state["steps"]["lm"]["status"] == "done" and state["steps"]["ft"]["status"] == "failed"
    lm_written = (out / "lm" / "pruneofa.json").stat().st_mtime_ns

    assert main(["run", str(recipe), f"steps.ft.overrides.data.train_file={task_files['train']}"]) == 0
    err = capsys.readouterr().err
    assert "step 1/2 lm (teacher): done in an earlier run, skipped" in err
    assert (out / "lm" / "pruneofa.json").stat().st_mtime_ns == lm_written
    assert meta(out / "ft")["recipe"]["model"] == str(out / "lm")
    assert json.loads((out / "pipeline.json").read_text())["steps"]["ft"]["attempts"] == 2


def test_unfinished_step_resumes_from_its_last_checkpoint(tiny_models, corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    overrides = {"model": str(tiny_models["bert"]), **lm_tiny(str(corpus_file))}
    recipe = write_pipeline(tmp_path / "p.yaml", {"lm": {"stage": "teacher", "overrides": overrides}}, out)
    assert main(["run", str(recipe)]) == 0
    # as if the process died after the checkpoint of step 4, before the final model was written
    (out / "lm" / "pruneofa.json").unlink()
    state = json.loads((out / "pipeline.json").read_text())
    state["steps"]["lm"]["status"] = "running"
    (out / "pipeline.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["run", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "resuming from its last checkpoint" in err
    assert meta(out / "lm")["recipe"]["resume"] is True and meta(out / "lm")["stage"] == "teacher"


def test_plan_passes_outputs_and_redoes_what_depends_on_a_changed_step(tmp_path):
    recipe = write_pipeline(tmp_path / "p.yaml", {
        "a": {"stage": "teacher", "overrides": {"train": {"max_steps": 5}}},
        "b": {"stage": "prune", "overrides": {"model": "${a}", "teacher": "${a}"}},
        "c": {"stage": "eval", "overrides": {"model": "${b}"}}}, tmp_path / "out")
    calls = []

    def fake(stage, recipe_name, values):
        calls.append((stage, dict(values)))
        out = tmp_path / "out" / values["output_dir"].rsplit("/", 1)[-1]
        out.mkdir(parents=True, exist_ok=True)
        (out / ("eval_metrics.json" if stage == "eval" else "pruneofa.json")).write_text("{}")
        (out / "run.json").write_text("{}")
        return out

    pipeline, source = load_pipeline(str(recipe))
    PipelineRunner(pipeline, source, log=lambda _: None, step_fn=fake).run()
    assert [c[0] for c in calls] == ["teacher", "prune", "eval"]
    assert calls[0][1] == {"train.max_steps": 5, "output_dir": str(tmp_path / "out" / "a")}
    assert calls[1][1]["model"] == calls[1][1]["teacher"] == str(tmp_path / "out" / "a")
    assert calls[2][1]["model"] == str(tmp_path / "out" / "b")

    calls.clear()
    pipeline, source = load_pipeline(str(recipe), parse_overrides(["steps.a.overrides.train.max_steps=6"]))
    plan = {s["name"]: s["action"] for s in PipelineRunner(pipeline, source, step_fn=fake).plan()}
    assert plan == {"a": "redo", "b": "redo", "c": "run"}
    pipeline, source = load_pipeline(str(recipe))
    assert {s["action"] for s in PipelineRunner(pipeline, source, step_fn=fake).plan()} == {"skip"}


@pytest.mark.parametrize("steps, message", [
    ({"a": {"stage": "teacher", "oops": 1}}, "unknown recipe key 'steps.a.oops'"),
    ({"a": {"stage": "quantize-everything"}}, "unknown stage 'quantize-everything'"),
    ({"a": {"stage": "teacher", "overrides": {"model": "${b}"}}, "b": {"stage": "teacher"}}, "names no earlier step"),
    ({"a": {"stage": "export", "overrides": {"model": "m", "fromat": "hf"}}}, "unknown export option(s) fromat"),
    ({"a": {"stage": "export", "recipe": "offline", "overrides": {"model": "m"}}}, "takes no recipe"),
])
def test_bad_pipeline_recipes_are_refused_in_one_line(steps, message, tmp_path, capsys):
    recipe = write_pipeline(tmp_path / "p.yaml", steps, tmp_path / "out")
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_the_shipped_demo_is_valid_and_fits_its_schedules():
    pipeline, _ = load_pipeline("demo")
    assert list(pipeline.steps) == STEPS and pipeline.output_dir == "runs/demo"
    from pruneofa.config.loader import text_values_parsed
    from pruneofa.pipeline.runner import resolve_step
    from pruneofa.stages.eval import load_eval_recipe
    from pruneofa.stages.registry import load_recipe

    for quick in (False, True):
        for name, spec in pipeline.steps.items():
            values = resolve_step(pipeline, name, quick)
            if spec.stage not in COMMANDS:
                load_recipe(spec.stage, spec.recipe, text_values_parsed(values))
            elif spec.recipe == "retrieval":  # what run_eval_step passes to the eval command
                options = {k: v for k, v in values.items() if k not in ("model", "output_dir")}
                assert load_eval_recipe(values["model"], spec.recipe, text_values_parsed(options)).kind == "retrieval"

    assert re.search(r"pruning.target_sparsity", str(pipeline.steps["prune"].overrides))
