"""`pruneofa bench` on the command line: table or JSON, bench.json written atomically, bad input exit 2."""

from __future__ import annotations

import json

import pytest

from pruneofa.cli import main
from pruneofa.pipeline.report import bench_summary, latency_ms

from .conftest import SEQ


def test_json_output_and_bench_json(sparse_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", str(sparse_dir), "--engines", "sparse", "--batch-sizes", "1,2", "--seq-len", str(SEQ),
                 "--rounds", "1", "--warmup", "0", "--no-memory", "--json", "--output-dir", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p.name for p in out.iterdir()] == ["bench.json"]  # no temporary file left behind
    assert json.loads((out / "bench.json").read_text()) == printed
    assert {(r["engine"], r["batch"]) for r in printed["rows"]} == {(e, b) for e in ("torch", "sparse") for b in (1, 2)}


def test_table_output(sparse_dir, capsys):
    assert main(["bench", str(sparse_dir), "--engines", "torch", "--seq-len", str(SEQ), "--rounds", "1",
                 "--no-memory", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "| engine | batch | median ms |" in text and "| torch | 1 |" in text and "1 threads" in text
    assert "| matches | kernel |" in text and "runtime kernels " in text


def test_decode_table(gpt2_dir, capsys):
    assert main(["bench", str(gpt2_dir), "--decode", "--engines", "torch", "--seq-len", "8", "--rounds", "1"]) == 0
    text = capsys.readouterr().out
    assert "| torch | 1 | prefill |" in text and "| torch | 1 | decode |" in text and "KV cache" in text


def test_table_has_the_baseline_column(structured_dirs, capsys):
    masked, compact = structured_dirs
    assert main(["bench", str(compact), "--engines", "torch", "--seq-len", str(SEQ), "--rounds", "1",
                 "--no-memory", "--baseline", str(masked)]) == 0
    text = capsys.readouterr().out
    assert "| x vs baseline |" in text and "| baseline | 1 |" in text and f"baseline (dense fp32 PyTorch" in text


def test_pipeline_report_reads_each_model_latency(tmp_path):
    from pruneofa.bench import write_bench_json

    summary = {"dense_fp32_ms": 20.0, "sparse_fp32_ms": 5.0, "sparse_int8_ms": 2.5}
    write_bench_json({"rows": [], "summary": summary}, tmp_path)
    assert [latency_ms(bench_summary(tmp_path), role) for role in ("dense", "sparse", "sparse_int8")] == [20.0, 5.0, 2.5]


@pytest.mark.parametrize("args, message", [
    (["/no/such/dir"], "does not exist"),
    (["{model}", "--engines", "torch,cuda"], "unknown engine 'cuda'"),
    (["{model}", "--batch-sizes", "1,x"], "bad --batch-sizes"),
    (["{model}", "--batch-sizes", "0"], "bad --batch-sizes"),
    (["{model}", "--output-dir", "{file}"], "is a file"),
])
def test_bad_input_exits_2_with_one_line(sparse_dir, tmp_path, capsys, args, message):
    (tmp_path / "f").write_text("")
    args = [a.format(model=sparse_dir, file=tmp_path / "f") for a in args]
    assert main(["bench", *args, "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
