"""`pruneofa bench --decode`: a causal LM's prefill and per-token decode step (KV cache), every engine
checked against torch's logits and timed interleaved per phase."""

from __future__ import annotations

import pytest

from pruneofa.bench import BenchOptions, format_table, run_benchmark
from pruneofa.errors import UserError
from pruneofa.runtime.build import kernels_available


def test_decode_times_prefill_and_the_per_token_step(gpt2_dir, tmp_path):
    engines = ("torch-int8", *(("sparse", "sparse-int8") if kernels_available() else ()))
    result = run_benchmark(gpt2_dir, BenchOptions(batch_sizes=(1, 2), seq_len=12, engines=engines, rounds=2,
                                                  warmup=1, decode=True), work_dir=tmp_path)
    assert result["settings"]["decode"] and result["skipped"] == []
    assert {(r["engine"], r["batch"], r["phase"]) for r in result["rows"]} == {
        (e, b, p) for e in ("torch", *engines) for b in (1, 2) for p in ("prefill", "decode")}
    for row in result["rows"]:
        assert row["matches_reference"], row
        if row["engine"] == "sparse":  # fp32: the same logits up to summation order
            assert row["rel_err"] < 1e-5, row
    decode_torch = next(r for r in result["rows"] if (r["engine"], r["batch"], r["phase"]) == ("torch", 1, "decode"))
    assert result["summary"]["dense_fp32_ms"] == decode_torch["median_ms"]
    assert result["settings"]["memory"] == "not measured"
    table = format_table(result)
    assert "| phase |" in table and "| torch | 1 | decode |" in table and "per-token decode, batch 1" in table


@pytest.mark.parametrize("options, message", [
    (dict(engines=("ort",)), "engine 'ort' does not serve --decode"),
    (dict(encode=True), "--encode and --decode are two different benchmarks"),
    (dict(compact=True), "--decode does not combine"),
    (dict(seq_len=64), "longer than the model's 63 positions"),
])
def test_bad_decode_settings_are_refused(gpt2_dir, options, message):
    with pytest.raises(UserError, match=message):
        run_benchmark(gpt2_dir, BenchOptions(decode=True, **options))


def test_decode_needs_a_causal_lm(sparse_dir):
    with pytest.raises(UserError, match="--decode needs a causal LM"):
        run_benchmark(sparse_dir, BenchOptions(decode=True, seq_len=8))
