"""bench/runtime_speed.py's whole-model comparison, on a tiny BERT: every engine asked for gets a row
against the same dense fp32 baseline, and an "-noamx" twin times the same runtime with AMX tiles off."""

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
    engines = ["torch", "sparse-int8", "dense-int8-native", "dense-int8-native-noamx"]
    rows = runtime_speed.bench_models(["tiny"], [0.9], engines, rounds=2, warmup=1, threads=1,
                                      pattern="unstructured", clock="wall", wait_idle=0.0)
    by_engine = {r["engine"]: r for r in rows}
    assert sorted(by_engine) == sorted(engines)
    assert by_engine["torch"]["speedup"] == 1.0 and by_engine["torch"]["rel_err"] == 0.0
    native, twin = by_engine["dense-int8-native"], by_engine["dense-int8-native-noamx"]
    assert native["layers"] == twin["layers"] and "dense-int8-native" in native["layers"]
    assert native["rel_err"] == twin["rel_err"] < 0.05  # tiles or not: the same bits, against the unpruned model
    assert "sparse-int8" in by_engine["sparse-int8"]["layers"]
