"""run_benchmark on tiny models: every engine present with its ratio, skips stated, outputs checked."""

from __future__ import annotations

import pytest

from pruneofa.bench import ENGINES, run_benchmark
from pruneofa.errors import UserError

from .conftest import SEQ


@pytest.fixture(scope="module")
def qat_result(qat_dir):
    return run_benchmark(qat_dir, batch_sizes=(1, 2), seq_len=SEQ, rounds=1, warmup=1, measure_memory=False)


def test_every_engine_runs_on_a_qat_dir_at_every_batch_size(qat_result):
    assert qat_result["model"]["source"] == "qat"
    assert qat_result["skipped"] == []
    assert {(r["engine"], r["batch"]) for r in qat_result["rows"]} == {(e, b) for e in ENGINES for b in (1, 2)}


def test_rows_carry_ratio_size_threads_and_a_passing_accuracy_check(qat_result):
    for row in qat_result["rows"]:
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"]
        assert row["seq_per_s"] == pytest.approx(row["batch"] / (row["median_ms"] / 1e3))
        torch_row = next(r for r in qat_result["rows"] if r["engine"] == "torch" and r["batch"] == row["batch"])
        assert row["speedup_vs_torch"] == pytest.approx(torch_row["median_ms"] / row["median_ms"])
        assert row["size_mb"] > 0 and row["threads"] == qat_result["settings"]["threads"]
        assert row["matches_reference"], row
        assert row["cosine"] > 0.99


def test_sparse_int8_files_are_smaller_than_dense_fp32(qat_result):
    size = {r["engine"]: r["size_mb"] for r in qat_result["rows"]}
    assert size["sparse-int8"] < size["sparse"] < size["torch"]
    assert size["ort-int8"] < size["ort"]


def test_summary_names_the_batch_1_latencies(qat_result):
    summary = qat_result["summary"]
    b1 = {r["engine"]: r["median_ms"] for r in qat_result["rows"] if r["batch"] == 1}
    assert summary["batch"] == 1
    assert summary["dense_fp32_ms"] == b1["torch"]
    assert summary["sparse_fp32_ms"] == b1["sparse"] and summary["sparse_int8_ms"] == b1["sparse-int8"]
    assert summary["best_ms"] == min(b1.values()) and summary["best_engine"] in b1
    assert qat_result["environment"]["loadavg_before"] and qat_result["environment"]["onnxruntime"]


def test_qdq_is_skipped_with_its_reason_and_memory_is_measured_per_row(sparse_dir):
    result = run_benchmark(sparse_dir, seq_len=SEQ, engines=["ort-qdq"], rounds=1, warmup=0)
    assert [r["engine"] for r in result["rows"]] == ["torch"]  # the reference always runs
    assert result["skipped"][0]["engine"] == "ort-qdq" and "QAT" in result["skipped"][0]["reason"]
    row = result["rows"][0]
    assert row["peak_rss_mb"] > row["peak_mb"] > 0, row.get("peak_error")
    # the engine's own memory (tiny weights, buffers), not the benchmark process's RSS carried over the fork
    assert row["peak_mb"] < 100


@pytest.mark.parametrize("kwargs", [dict(batch_sizes=(0,)), dict(batch_sizes=()), dict(engines=["cuda"]),
                                    dict(seq_len=0), dict(seq_len=65), dict(rounds=0)])
def test_bad_settings_are_refused(sparse_dir, kwargs):
    with pytest.raises(UserError):
        run_benchmark(sparse_dir, **{"measure_memory": False, **kwargs})
