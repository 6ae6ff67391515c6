"""The study scripts in bench/ build pipelines the schema accepts (every step's stage, options and
${step} references), at their default budgets: a typo there would otherwise surface an hour into a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from pruneofa.pipeline.schema import validate_pipeline

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(autouse=True)
def bench_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import each other as top-level modules
    yield
    for name in ("transfer_study", "pattern_study"):
        sys.modules.pop(name, None)


def test_transfer_study_has_every_arm_for_every_seed():
    import transfer_study

    args = argparse.Namespace(output_dir=Path("runs/x"), seeds=[1, 2], teacher_steps=100, prune_steps=80,
                              lm_batch=8, task_steps=160, task_batch=32, max_eval_samples=None)
    pipeline = validate_pipeline(transfer_study.study_pipeline(args))
    arms = {f"{kind}-{s}-s{seed}" for kind in ("ofa", "nokd", "ds") for s in (85, 90) for seed in (1, 2)}
    assert arms | {"dense-s1", "dense-s2", "teacher", "prune-85", "prune-90"} == set(pipeline.steps)
    assert pipeline.steps["ofa-90-s2"].overrides["teacher"] == "${dense-s2}"
    assert pipeline.steps["nokd-85-s1"].recipe == "no-kd"


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
