"""run_benchmark on tiny models: every engine present with its ratio, skips stated, outputs checked."""

from __future__ import annotations

import pytest

from pruneofa.bench import ENGINES, BenchOptions, run_benchmark
from pruneofa.bench.engines import OPT_IN
from pruneofa.errors import UserError

from .conftest import SEQ


@pytest.fixture(scope="module")
def qat_result(qat_dir):
    return run_benchmark(qat_dir, BenchOptions(batch_sizes=(1, 2), seq_len=SEQ, rounds=1, warmup=1, measure_memory=False))


def test_every_engine_runs_on_a_qat_dir_at_every_batch_size(qat_result):
    assert qat_result["model"]["source"] == "qat"
    assert qat_result["skipped"] == []
    default = [e for e in ENGINES if e not in OPT_IN]
    assert {(r["engine"], r["batch"]) for r in qat_result["rows"]} == {(e, b) for e in default for b in (1, 2)}


def test_the_measured_layout_engine_runs_when_named(sparse_dir):
    from pruneofa.bench.engines import unavailable_reason

    engines = ("sparse-int8", "sparse-int8-measured")
    result = run_benchmark(sparse_dir, BenchOptions(seq_len=SEQ, engines=engines, rounds=1, warmup=0,
                                                    measure_memory=False))
    reason = unavailable_reason("sparse-int8-measured")
    rows = {r["engine"]: r for r in result["rows"]}
    if reason is not None:  # no native int8 kernels on this CPU: skipped with its reason, not failed
        assert result["skipped"] == [{"engine": "sparse-int8-measured", "reason": reason}]
        return
    assert "layouts timed at load" in rows["sparse-int8-measured"]["layers"]
    assert "layouts timed at load" not in rows["sparse-int8"]["layers"]
    assert rows["sparse-int8-measured"]["matches_reference"]


def test_rows_carry_ratio_size_threads_and_a_passing_accuracy_check(qat_result):
    for row in qat_result["rows"]:
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"]
        assert row["seq_per_s"] == pytest.approx(row["batch"] / (row["median_ms"] / 1e3))
        torch_row = next(r for r in qat_result["rows"] if r["engine"] == "torch" and r["batch"] == row["batch"])
        assert row["speedup_vs_torch"] == pytest.approx(torch_row["median_ms"] / row["median_ms"])
        assert row["size_mb"] > 0 and row["threads"] == qat_result["settings"]["threads"]
        assert row["matches_reference"], row
        assert row["cosine"] > 0.99


def test_rows_name_the_kernels_that_ran(qat_result):
    """`kernel`: the runtime's kernel set (picked from the CPU's flags) for engines whose Linears run on
    it, None for PyTorch's and onnxruntime's own; the environment names the CPU and the set it builds."""
    from pruneofa.runtime import kernels

    isa = kernels.kernel_isa()
    assert qat_result["environment"]["kernels"] == kernels.kernel_label() and "cpu_model" in qat_result["environment"]
    assert kernels.kernel_label() == (f"{isa}+amx" if kernels.amx_active() else isa)
    rows = {r["engine"]: r for r in qat_result["rows"]}
    assert rows["sparse"]["kernel"] == isa  # fp32: never on tiles
    assert rows["sparse-int8"]["kernel"] in (isa, kernels.kernel_label())
    kernel = {engine: r["kernel"] for engine, r in rows.items()}
    assert kernel["torch"] is None and kernel["ort"] is None and kernel["torch-int8"] is None


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
    result = run_benchmark(sparse_dir, BenchOptions(seq_len=SEQ, engines=("ort-qdq",), rounds=1, warmup=0))
    assert [r["engine"] for r in result["rows"]] == ["torch"]  # the reference always runs
    assert result["skipped"][0]["engine"] == "ort-qdq" and "QAT" in result["skipped"][0]["reason"]
    row = result["rows"][0]
    assert row["peak_rss_mb"] > row["peak_mb"] > 0, row.get("peak_error")
    # the engine's own memory (tiny weights, buffers), not the benchmark process's RSS carried over the fork
    assert row["peak_mb"] < 100


def test_a_baseline_dir_is_timed_in_the_same_rounds_and_is_what_speedups_refer_to(structured_dirs):
    masked, compact = structured_dirs
    result = run_benchmark(compact, BenchOptions(seq_len=SEQ, engines=("torch", "dense"), rounds=2, warmup=0,
                                                 measure_memory=False, baseline=str(masked)))
    rows = {r["engine"]: r for r in result["rows"]}
    assert set(rows) == {"torch", "dense", "baseline"} and result["baseline"] == str(masked)
    # compaction keeps the masked model's outputs, so the baseline passes the fp32 check
    assert rows["baseline"]["matches_reference"] and rows["baseline"]["rel_err"] < 1e-5
    for row in rows.values():
        assert row["speedup_vs_baseline"] == pytest.approx(rows["baseline"]["median_ms"] / row["median_ms"])
    summary = result["summary"]
    assert summary["dense_fp32_ms"] == rows["baseline"]["median_ms"] and summary["best_engine"] != "baseline"
    assert summary["best_speedup"] == rows[summary["best_engine"]]["speedup_vs_baseline"]


def test_compact_benchmarks_the_rebuilt_model_against_the_masked_one(structured_dirs):
    masked, compact = structured_dirs
    result = run_benchmark(masked, BenchOptions(seq_len=SEQ, engines=("torch",), rounds=1, warmup=0,
                                                measure_memory=False, compact=True))
    assert result["model_dir"] == str(masked) and result["compacted"] and result["baseline"] == str(masked)
    rows = {r["engine"]: r for r in result["rows"]}
    # "torch" is the compacted model: fewer bytes, the masked model's outputs
    compact_bytes = sum(f.stat().st_size for f in compact.glob("model*.safetensors"))
    assert rows["torch"]["size_mb"] == pytest.approx(compact_bytes / 1e6)
    assert rows["torch"]["size_mb"] < rows["baseline"]["size_mb"] and rows["baseline"]["matches_reference"]


def test_a_baseline_of_another_vocabulary_is_refused(structured_dirs, tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "other")
    for baseline, message in ((tmp_path / "other", "vocabulary of 50"), (tmp_path / "none", "does not exist")):
        with pytest.raises(UserError, match=message):
            run_benchmark(structured_dirs[1], BenchOptions(seq_len=SEQ, engines=("torch",), rounds=1,
                                                            measure_memory=False, baseline=str(baseline)))


@pytest.mark.parametrize("kwargs", [dict(batch_sizes=(0,)), dict(batch_sizes=()), dict(engines=["cuda"]),
                                    dict(seq_len=0), dict(seq_len=65), dict(rounds=0)])
def test_bad_settings_are_refused(sparse_dir, kwargs):
    with pytest.raises(UserError):
        run_benchmark(sparse_dir, BenchOptions(**{"measure_memory": False, **kwargs}))
