"""bench/deepsparse_compare.py, with onnxruntime in the worker where DeepSparse is not installed: the
worker runs in another process, alternates with our engines and computes what its ONNX file says."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.bench.conftest import SEQ

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture()
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # it imports its neighbours as top-level modules
    import deepsparse_compare

    yield deepsparse_compare
    sys.modules.pop("deepsparse_compare", None)


def _args(*extra: str) -> list[str]:
    return ["--other-python", sys.executable, "--other-engine", "onnxruntime", "--threads", "1",
            "--rounds", "3", "--warmup", "1", "--seq-len", str(SEQ), *extra]


def test_fp32_worker_matches_torch_and_every_engine_is_timed_each_round(script, sparse_dir, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert script.main([str(sparse_dir), *_args("--engines", "torch,sparse", "--json", str(out))]) == 0
    result = json.loads(out.read_text())
    rows = {row["engine"]: row for row in result["rows"]}
    assert set(rows) == {"torch", "sparse", "onnxruntime (fp32 ONNX)"}
    worker = rows["onnxruntime (fp32 ONNX)"]
    assert worker["rel_error"] < 1e-4  # the worker ran the model's own ONNX export on the same inputs
    assert rows["torch"]["x_dense_fp32"] == 1.0
    for row in rows.values():
        assert row["median_ms"] >= row["min_ms"] > 0
    assert result["other"]["engine"] == "onnxruntime" and result["other"]["version"]
    assert "| onnxruntime (fp32 ONNX) |" in capsys.readouterr().out


def test_qat_dir_gives_the_worker_the_int8_qdq_export(script, qat_dir, tmp_path):
    out = tmp_path / "result.json"
    assert script.main([str(qat_dir), *_args("--engines", "torch,sparse-int8", "--json", str(out))]) == 0
    rows = {row["engine"]: row for row in json.loads(out.read_text())["rows"]}
    qdq = rows["onnxruntime (int8 QDQ ONNX)"]
    assert 0 < qdq["rel_error"] < 0.1  # int8: close to the fp32 reference, not equal to it


def test_static_int8_graph_runs_in_a_worker_of_its_own(script, sparse_dir, tmp_path):
    """--graphs native,static-int8: a second worker on onnxruntime's static int8 (QLinearMatMul) form of the
    opset-13 graph, the int8 graph DeepSparse's engine takes: int8-close to the reference, timed in the same
    rounds."""
    out = tmp_path / "result.json"
    args = _args("--engines", "torch", "--graphs", "native,static-int8", "--json", str(out))
    assert script.main([str(sparse_dir), *args]) == 0
    rows = {row["engine"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"torch", "onnxruntime (fp32 ONNX)", "onnxruntime (int8 QLinearMatMul opset-13 ONNX)"}
    static = rows["onnxruntime (int8 QLinearMatMul opset-13 ONNX)"]
    assert 0 < static["rel_error"] < 0.1 and static["median_ms"] > 0


def test_a_burst_times_only_the_last_of_consecutive_calls(script):
    calls, clock = [], iter(range(100))

    class CountingWorker:
        def seconds(self):
            calls.append("other")
            return float(next(clock))

    times = script.alternate({"a": lambda: calls.append("a")}, {"other": CountingWorker()}, rounds=2, warmup=1,
                             burst=3)
    assert calls.count("a") == calls.count("other") == 9  # 3 rounds x 3 calls in a row
    assert times["other"] == [5.0, 8.0] and len(times["a"]) == 2  # the third call of each timed round


def test_alternate_records_rounds_after_warmup_for_each_engine(script):
    calls = []

    class FakeWorker:
        def seconds(self):
            calls.append("other")
            return 0.5

    workers = {"other": FakeWorker(), "another": FakeWorker()}
    times = script.alternate({"a": lambda: calls.append("a")}, workers, rounds=4, warmup=2)
    assert calls.count("a") == 6 and calls.count("other") == 12  # two workers, each once a round
    assert times["other"] == times["another"] == [0.5] * 4 and len(times["a"]) == 4


def test_missing_engine_in_the_other_venv_is_a_one_line_error(script, sparse_dir, capsys):
    if importlib.util.find_spec("deepsparse"):
        pytest.skip("deepsparse is installed here: the missing-engine path cannot be reached")
    args = _args("--engines", "torch")
    args[args.index("onnxruntime")] = "deepsparse"
    assert script.main([str(sparse_dir), *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "deepsparse is not importable" in errors[0] and "pip install deepsparse" in errors[0]


def test_other_python_that_does_not_exist_is_a_one_line_error(script, sparse_dir, tmp_path, capsys):
    args = _args("--engines", "torch")
    args[1] = str(tmp_path / "no-venv" / "python")
    assert script.main([str(sparse_dir), *args]) == 2
    assert "cannot start --other-python" in capsys.readouterr().err


def test_qat_made_from_a_plain_dir_is_a_qat_dir_and_leaves_no_partial_one(script, sparse_dir, tmp_path):
    from pruneofa.modeldir import kind_of

    out = script.calibrated_qat_dir(sparse_dir, 100, SEQ, tmp_path / "qat")
    assert kind_of(out) == "qat"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qat"]
