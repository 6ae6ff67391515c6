"""bench/runtime_speed.py's whole-model comparison, on a tiny BERT: every engine asked for gets a row
against the same dense fp32 baseline, an "-noamx" twin times the same runtime with AMX tiles off, and
"sparse-int8-measured" the layouts timed at load."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def runtime_speed(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import runtime_speed

    monkeypatch.setitem(runtime_speed.SHAPES, "tiny", dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                                           num_attention_heads=4, vocab_size=30000))
    yield runtime_speed
    sys.modules.pop("runtime_speed", None)


def test_every_engine_and_its_amx_twin_get_a_row(runtime_speed):
    from pruneofa.runtime.build import kernels_available

    if not kernels_available():
        pytest.skip("no C++ compiler: the runtime's engines fall back to PyTorch")
    engines = ["torch", "sparse-int8", "dense-int8-native", "dense-int8-native-noamx", "sparse-int8-measured"]
    rows = runtime_speed.bench_models(["tiny"], [0.9], engines, rounds=2, warmup=1, threads=1,
                                      pattern="unstructured", clock="wall", wait_idle=0.0)
    by_engine = {r["engine"]: r for r in rows}
    assert sorted(by_engine) == sorted(engines)
    assert by_engine["torch"]["speedup"] == 1.0 and by_engine["torch"]["rel_err"] == 0.0
    native, twin = by_engine["dense-int8-native"], by_engine["dense-int8-native-noamx"]
    assert native["layers"] == twin["layers"] and "dense-int8-native" in native["layers"]
    assert native["rel_err"] == twin["rel_err"] < 0.05  # tiles or not: the same bits, against the unpruned model
    assert "sparse-int8" in by_engine["sparse-int8"]["layers"]
    measured = by_engine["sparse-int8-measured"]
    assert "layouts timed at load" in measured["layers"] and measured["rel_err"] < 0.05


def test_crossing_interpolates_where_the_speed_up_reaches_one(runtime_speed):
    grid = [0.8, 0.85, 0.9]
    assert runtime_speed.crossing(grid, [0.8, 0.9, 1.1]) == pytest.approx(0.875)
    assert runtime_speed.crossing(grid, [1.2, 1.3, 1.4]) == 0.8  # faster from the start
    assert runtime_speed.crossing(grid, [0.5, 0.6, 0.7]) is None  # never


def test_model_break_even_rows_per_shape_and_length(runtime_speed, monkeypatch):
    from pruneofa.runtime.build import kernels_available

    if not kernels_available():
        pytest.skip("no C++ compiler: the runtime's engines fall back to PyTorch")
    monkeypatch.setattr(runtime_speed, "MODEL_GRID", [0.5, 0.9])
    rows = runtime_speed.model_break_even(["tiny"], [8, 20], rounds=2, warmup=1, threads=1)
    assert [(r["shape"], r["seq_len"]) for r in rows] == [("tiny", 8), ("tiny", 20)]
    for r in rows:
        assert list(r["speedup_by_sparsity"]) == [0.5, 0.9] and r["dense_ms"] > 0
