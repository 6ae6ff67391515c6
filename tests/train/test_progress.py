"""Throughput and time left, as the progress bar and TensorBoard show them."""

import pytest

from pruneofa.train import progress


def test_tokens_per_second_and_eta_are_averaged_over_this_runs_updates(monkeypatch):
    clock = iter([100.0, 110.0, 130.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    meter = progress.Throughput(start_step=20, max_steps=120, tokens=5_000)  # a resumed run: counts from step 20
    first = meter.measure(step=30, tokens=15_000)
    assert first["tokens_per_s"] == pytest.approx(10_000 / 10)
    assert first["eta_minutes"] == pytest.approx(90 * (10 / 10) / 60)
    later = meter.measure(step=60, tokens=45_000)
    assert later["tokens_per_s"] == pytest.approx(40_000 / 30)
    assert later["eta_minutes"] == pytest.approx(60 * (30 / 40) / 60)
