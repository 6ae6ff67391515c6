"""bench/bench_random.py's model cache: a directory is made once, whole, or not at all."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench_random(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their neighbours as top-level modules
    import bench_random

    yield bench_random
    sys.modules.pop("bench_random", None)


def test_an_interrupted_save_leaves_nothing_that_looks_made_and_the_next_run_makes_it(bench_random, tmp_path):
    out = tmp_path / "model"

    def interrupted(partial: Path) -> None:
        partial.mkdir()
        (partial / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bench_random.saved_once(out, interrupted)
    assert not out.exists() and (tmp_path / "model.partial").is_dir()
    calls = []

    def save(partial: Path) -> None:
        calls.append(partial)
        partial.mkdir()
        (partial / "weights").write_text("whole")

    assert bench_random.saved_once(out, save) == out
    assert sorted(p.name for p in out.iterdir()) == ["weights"]  # the interrupted run's file is gone
    assert not (tmp_path / "model.partial").exists()
    assert bench_random.saved_once(out, save) == out and len(calls) == 1  # made once, then reused
