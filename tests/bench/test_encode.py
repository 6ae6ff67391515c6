"""`pruneofa bench --encode`: sentence embeddings timed on torch, the runtime's engines and
sentence-transformers, each checked against transformers' forward pooled as the directory says."""

from __future__ import annotations

import shutil

import pytest

from pruneofa.bench import BenchOptions, run_benchmark
from pruneofa.bench.inputs import make_sentences
from pruneofa.errors import UserError
from pruneofa.runtime.build import kernels_available

pytest.importorskip("sentence_transformers")  # the [st] extra, installed by make setup


def test_encode_times_every_engine_on_the_same_embeddings(tiny_sentence_transformers, tmp_path):
    engines = ["sentence-transformers", "dense"] + (["sparse-int8"] if kernels_available() else [])
    result = run_benchmark(tiny_sentence_transformers, BenchOptions(
        batch_sizes=(1, 3), seq_len=16, engines=tuple(engines), rounds=1, warmup=1, encode=True), work_dir=tmp_path)
    assert result["settings"]["encode"] and result["skipped"] == []
    assert {(r["engine"], r["batch"]) for r in result["rows"]} == {(e, b) for e in ["torch", *engines] for b in (1, 3)}
    for row in result["rows"]:
        assert row["matches_reference"], row
        if row["engine"] in ("sentence-transformers", "dense"):  # fp32: the same pooling, the same numbers
            assert row["rel_err"] < 1e-5, row
    assert result["settings"]["memory"] == "not measured"


def test_the_measured_layout_engine_times_its_layouts_at_the_benchmarks_length(tiny_sentence_transformers, tmp_path):
    from transformers import AutoModel

    from pruneofa import Pruner
    from pruneofa.bench.engines import unavailable_reason

    if unavailable_reason("sparse-int8-measured") is not None:
        pytest.skip(unavailable_reason("sparse-int8-measured"))
    model_dir = tmp_path / "sparse-st"
    shutil.copytree(tiny_sentence_transformers, model_dir)
    model = AutoModel.from_pretrained(model_dir)  # pruned, so that its Linears are candidates for either layout
    Pruner(model, method="oneshot", target_sparsity=0.9, start_step=0).finalize()
    model.save_pretrained(model_dir)
    result = run_benchmark(model_dir, BenchOptions(
        seq_len=12, engines=("sparse-int8-measured",), rounds=1, warmup=0, encode=True, measure_memory=False),
        work_dir=tmp_path / "work")
    row = next(r for r in result["rows"] if r["engine"] == "sparse-int8-measured")
    assert "layouts timed at load (1 x 12 tokens" in row["layers"] and row["matches_reference"]


def test_the_sentences_have_the_asked_length_and_differ(tokenizer):
    sentences = make_sentences(tokenizer, 3, 24)
    assert len(set(sentences)) == 3
    assert all(abs(len(tokenizer(s)["input_ids"]) - 24) <= 2 for s in sentences)


def test_engines_that_do_not_serve_encode_are_refused(tiny_sentence_transformers):
    with pytest.raises(UserError, match="engine 'ort' does not serve --encode"):
        run_benchmark(tiny_sentence_transformers, BenchOptions(engines=("ort",), encode=True))
    with pytest.raises(UserError, match="--encode does not combine"):
        run_benchmark(tiny_sentence_transformers, BenchOptions(encode=True, compact=True))
