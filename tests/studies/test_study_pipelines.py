"""The study scripts in studies/ build pipelines the schema accepts (every step's stage, options and
${step} references), at their default budgets: a typo there would otherwise surface an hour into a run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from pruneofa.config.loader import load_yaml
from pruneofa.pipeline.runner import find_pipeline
from pruneofa.pipeline.schema import flatten, validate_pipeline

STUDIES = Path(__file__).resolve().parents[2] / "studies"


@pytest.fixture(autouse=True)
def studies_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(STUDIES))  # the scripts import each other as top-level modules
    yield
    for name in ("transfer_study", "pattern_study"):
        sys.modules.pop(name, None)


def test_transfer_study_has_every_arm_for_every_task_and_seed():
    import transfer_study

    args = transfer_study.parse_args(["--output-dir", "runs/x"])  # the recorded defaults
    steps = validate_pipeline(transfer_study.study_pipeline(args)).steps
    students = {f"{arm}-{s}-p{p}" for arm in ("ofa", "best") for s in (85, 90) for p in (1, 2)}
    task_runs = {f"{task}-{arm}-t{t}" for task in ("rt", "pairs") for t in (1, 2, 3)
                 for arm in ["dense", "ds-85", "ds-90", *students]}
    retrieval = {f"retrieval-{name}" for name in ["teacher", *students]}
    assert {"teacher", *students, *retrieval, *task_runs} == set(steps)
    # the pre-training seed varies on purpose, and each task run distils from the dense run of its own seed
    assert steps["best-90-p2"].overrides["seed"] == 2 and steps["best-90-p2"].recipe == "offline"
    # ours is the shipped demo's prune step, at the study's sparsity and seed
    demo = flatten(load_yaml(find_pipeline("demo"))["steps"]["prune"]["overrides"])
    best = dict(steps["best-90-p2"].overrides)
    assert {**demo, "pruning.target_sparsity": 0.9, "seed": 2} == {**best, "model": demo["model"]}
    # the paper's arm: the same steps, batch and GMP timing; only the ranking, the update, the rate and the terms differ
    ofa = dict(steps["ofa-90-p2"].overrides)
    assert (ofa.pop("pruning.criterion"), best.pop("pruning.criterion")) == ("magnitude", "wanda")
    assert best.pop("pruning.reconstruct") is True and best.pop("pruning.calibration_steps") > 0
    assert (ofa.pop("train.lr"), best.pop("train.lr")) == (args.prune_lr, 3e-4)
    assert [k for k in best if k.startswith("distill.")] and not [k for k in ofa if k.startswith("distill.")]
    assert ofa == {k: v for k, v in best.items() if not k.startswith("distill.")}
    assert steps["pairs-ofa-85-p2-t3"].overrides["teacher"] == "${pairs-dense-t3}"
    assert steps["pairs-ofa-85-p2-t3"].overrides["model"] == "${ofa-85-p2}"
    assert steps["rt-ds-90-t1"].overrides["pruning.target_sparsity"] == 0.9
    # an equal task-side budget for every arm
    for task, task_steps in (("rt", args.task_steps), ("pairs", args.pairs_task_steps)):
        budgets = {(o["train.max_steps"], o["train.batch_size"]) for name, spec in steps.items()
                   if name.startswith(f"{task}-") for o in [spec.overrides]}
        assert budgets == {(task_steps, args.task_batch)}
    assert args.pairs_task_steps != args.task_steps
    assert steps["pairs-ds-85-t1"].overrides["pruning.target_step"] == (2 * args.pairs_task_steps) // 3
    # learning rates by kind of model, as measured at this budget (docs/RESULTS.md)
    lrs = {name: spec.overrides["train.lr"] for name, spec in steps.items() if "train.lr" in spec.overrides}
    assert lrs["rt-dense-t1"] == args.dense_lr and lrs["rt-ofa-85-p1-t3"] == args.sparse_lr
    assert lrs["rt-ds-90-t2"] == args.downstream_lr < args.sparse_lr
    assert lrs["pairs-best-85-p1-t3"] == args.pairs_sparse_lr < args.sparse_lr
    assert lrs["pairs-ds-90-t2"] == args.pairs_downstream_lr < args.pairs_sparse_lr
    assert lrs["ofa-85-p2"] == args.prune_lr < lrs["best-85-p2"] == 3e-4 and args.sparse_lr > args.dense_lr


def test_transfer_study_takes_a_prepared_teacher_for_every_arm(tmp_path, capsys):
    import transfer_study

    teacher = tmp_path / "t"
    options = ["--output-dir", "runs/x", "--teacher", str(teacher), "--tasks", "rt", "--sparsities", "85",
               "--pretrain-seeds", "1", "--task-seeds", "1"]
    with pytest.raises(SystemExit) as stop:  # not a finished teacher run: refused before anything runs
        transfer_study.parse_args(options)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --teacher") and err.count("\n") == 1
    teacher.mkdir()
    (teacher / "metrics.json").write_text('{"train_tokens": 1}')
    steps = validate_pipeline(transfer_study.study_pipeline(transfer_study.parse_args(options))).steps
    assert "teacher" not in steps
    assert {steps[n].overrides["model"] for n in ("ofa-85-p1", "best-85-p1", "rt-dense-t1", "rt-ds-85-t1",
                                                    "retrieval-teacher")} == {str(teacher)}


def test_pattern_study_times_compacted_models_against_their_masked_model():
    import pattern_study

    args = argparse.Namespace(output_dir=Path("runs/y"), lm_teacher=Path("t"), task_teacher=Path("d"),
                              patterns=list(pattern_study.PATTERNS), prune_steps=80, lm_batch=8, task_steps=160,
                              task_batch=32, seed=1, rounds=20)
    steps = validate_pipeline(pattern_study.study_pipeline(args)).steps
    for name in pattern_study.PATTERNS:
        bench = steps[f"bench-{name}"].overrides
        if name in pattern_study.COMPACTED:
            assert bench["model"] == f"${{compact-{name}}}" and bench["baseline"] == f"${{rt-{name}}}"
        else:
            assert bench["model"] == f"${{rt-{name}}}" and "baseline" not in bench


def test_only_runs_the_named_steps_in_order_and_skips_finished_ones(tmp_path, monkeypatch):
    import transfer_study

    args = transfer_study.parse_args(["--output-dir", str(tmp_path), "--tasks", "rt", "--sparsities", "85",
                                      "--task-seeds", "1", "--pretrain-seeds", "1"])
    pipeline = validate_pipeline(transfer_study.study_pipeline(args))
    (tmp_path / "rt-dense-t1").mkdir()
    (tmp_path / "rt-dense-t1" / "pruneofa.json").write_text("{}")  # a finished training step
    ran = []
    monkeypatch.setattr(transfer_study, "run_step", lambda stage, recipe, values: ran.append(values["output_dir"]))
    transfer_study.run_only(pipeline, ["rt-dense-t1", "rt-ofa-85-p1-t1", "rt-ds-85-t1"])
    assert ran == [str(tmp_path / "rt-ofa-85-p1-t1"), str(tmp_path / "rt-ds-85-t1")]
    with pytest.raises(SystemExit) as stop:
        transfer_study.run_only(pipeline, ["rt-dense-t9"])
    assert stop.value.code == 2


def test_paired_differences_cancel_each_task_seeds_luck():
    import transfer_study

    args = transfer_study.parse_args(["--output-dir", "runs/x", "--tasks", "rt", "--sparsities", "85",
                                      "--task-seeds", "1", "2", "--pretrain-seeds", "1", "2"])
    runs = {"ds-85": [0.70, 0.80],  # by task seed
            "ofa-85": [0.71, 0.79, 0.73, 0.77],  # pre-training seed major: p1t1, p1t2, p2t1, p2t2
            "best-85": [0.74, 0.83, 0.76, 0.81]}
    rows = {f"rt/{arm}": {"accuracy": {"runs": r}} for arm, r in runs.items()}
    paired = transfer_study.paired_differences(rows, args)
    best_ds = paired["rt/best-85 - ds-85"]
    assert best_ds["runs"] == pytest.approx([5.0, 2.0]) and best_ds["won"] == 2  # (0.74+0.76)/2 - 0.70, ...
    assert best_ds["mean"] == pytest.approx(3.5) and best_ds["std"] == pytest.approx(2.1213, abs=1e-4)
    ofa_ds = paired["rt/ofa-85 - ds-85"]
    assert ofa_ds["runs"] == pytest.approx([2.0, -2.0]) and ofa_ds["won"] == 1
    assert paired["rt/best-85 - ofa-85"]["runs"] == pytest.approx([3.0, 4.0])


def test_pooled_differences_join_studies_seed_by_seed(tmp_path, monkeypatch, capsys):
    import transfer_study

    def study(best_ds: list[float]) -> dict:
        return {"paired": {"rt/best-85 - ds-85": {"runs": best_ds}}}

    pooled = transfer_study.pooled_differences([study([1.0, 3.0]), study([-1.0, 5.0])])
    d = pooled["rt/best-85 - ds-85"]
    assert d["runs"] == [1.0, 3.0, -1.0, 5.0] and d["won"] == 3
    # mean 2, sample std sqrt(20/3), t = 2 / (sqrt(20/3) / 2)
    assert d["mean"] == pytest.approx(2.0) and d["t"] == pytest.approx(2 / ((20 / 3) ** 0.5 / 2))

    files = []
    for i, diffs in enumerate(([1.0, 3.0], [-1.0, 5.0])):
        files.append(tmp_path / f"s{i}.json")
        files[-1].write_text(json.dumps(study(diffs)))
    monkeypatch.setattr(sys, "argv", ["transfer_study.py", "--pool", *map(str, files)])
    assert transfer_study.main() == 0
    assert "| rt/best-85 - ds-85 | +1.00, +3.00, -1.00, +5.00 | +2.00 ± 2.58 | 1.55 (n = 4) | 3 of 4 |" in \
        capsys.readouterr().out
    (tmp_path / "old.json").write_text(json.dumps({"rows": {}}))  # summarized before paired differences existed
    for bad, reason in (("missing.json", "does not exist"), ("old.json", "has no paired differences")):
        monkeypatch.setattr(sys, "argv", ["transfer_study.py", "--pool", str(files[0]), str(tmp_path / bad)])
        with pytest.raises(SystemExit) as stop:
            transfer_study.main()
        err = capsys.readouterr()
        assert stop.value.code == 2 and reason in err.err and err.err.count("\n") == 1 and not err.out


def test_summary_leaves_out_arms_not_finished_and_names_them(tmp_path):
    import transfer_study

    args = transfer_study.parse_args(["--output-dir", str(tmp_path), "--tasks", "rt", "--sparsities", "85", "90",
                                      "--task-seeds", "1", "2", "--pretrain-seeds", "1"])
    args.teacher = tmp_path / "teacher"

    def finished(name: str, accuracy: float = 0.0, tokens: int = 10, sparsity: float = 0.0) -> None:
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.json").write_text(json.dumps(
            {"train_tokens": tokens, "test/accuracy": accuracy, "sparsity": sparsity}))

    finished("teacher", tokens=100)
    finished("best-85-p1", tokens=50)
    for t, (dense, ds, best) in {1: (0.80, 0.70, 0.74), 2: (0.82, 0.78, 0.76)}.items():
        finished(f"rt-dense-t{t}", dense)
        finished(f"rt-ds-85-t{t}", ds, sparsity=0.85)
        finished(f"rt-best-85-p1-t{t}", best, sparsity=0.85)
    finished("rt-ds-90-t1", 0.6, sparsity=0.9)  # one of two seeds: the arm is left out whole
    for name in ("teacher", "best-85-p1"):
        (tmp_path / f"retrieval-{name}").mkdir()
        recall = json.dumps({"recall@1": 0.5, "recall@10": 0.9})
        (tmp_path / f"retrieval-{name}" / "eval_metrics.json").write_text(recall)

    summary = transfer_study.summarize(tmp_path, args)
    assert set(summary["rows"]) == {"rt/dense", "rt/ds-85", "rt/best-85"}
    assert summary["not_run"] == ["rt/ofa-85 (0 of 2 runs)", "rt/ds-90 (1 of 2 runs)", "rt/ofa-90 (0 of 2 runs)",
                                  "rt/best-90 (0 of 2 runs)"]
    assert list(summary["paired"]) == ["rt/best-85 - ds-85"]
    assert summary["paired"]["rt/best-85 - ds-85"]["runs"] == pytest.approx([4.0, -2.0])
    assert summary["rows"]["rt/best-85"]["pretrain_tokens"] == 150  # the teacher's and its own pruning run's
    assert summary["rows"]["rt/best-85"]["task_tokens"] == 20  # its own run and the dense task run it distils from
    assert set(summary["retrieval"]) == {"teacher", "best-85"}
    md = transfer_study.tables(summary, args)
    assert "| rt | best-85 | 75.00 ± 1.41 | 74.00–76.00 | 92.6% | 85.0% | 0.00M | 0.00M | 2 |" in md
    assert md.endswith("Not run yet, so left out: rt/ofa-85 (0 of 2 runs), rt/ds-90 (1 of 2 runs), "
                       "rt/ofa-90 (0 of 2 runs), rt/best-90 (0 of 2 runs).")
