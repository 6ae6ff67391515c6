"""pruneofa's engines against DeepSparse, in the same time window, alternating call by call.

DeepSparse (Neural Magic's sparse CPU runtime, deprecated in 2025) is never a dependency: install it
in a venv of its own (it supports Python <= 3.11 and pins its own numpy and onnx), and pass that
venv's python. bench/onnx_worker.py then runs in it, loads the model's ONNX export and answers
"run" commands; every round calls each engine once in a new random order (ours in this process,
DeepSparse in the worker, which times its own call), so load from other processes falls on all of
them alike. Ratios are of medians to dense fp32 PyTorch (`torch`) in the same run.

    python3.11 -m venv ~/ds && ~/ds/bin/pip install deepsparse           # once, anywhere
    .venv/bin/python bench/deepsparse_compare.py MODEL_DIR --other-python ~/ds/bin/python
    .venv/bin/python bench/deepsparse_compare.py --random-shape base --sparsity 0.9 --qat \\
        --other-python ~/ds/bin/python --threads 2 --rounds 30 --priority --json runs/ds-base.json
    .venv/bin/python bench/deepsparse_compare.py --random-shape base --sparsity 0.9 --qat \\
        --graphs native,static-int8 --burst 5 --other-python ~/ds/bin/python --threads 2 --rounds 30 --priority

MODEL_DIR is any directory `pruneofa bench` takes (a QAT dir from `pruneofa quantize`; `--qat` makes one
from a random model by calibrating the observers on random batches: sparse-int8 then reads its scales).
`--other-engine onnxruntime` runs the worker with onnxruntime on pruneofa's own ONNX export (fp32, or
int8 QDQ for a QAT dir) instead, in any venv that has it: the same comparison against a dense runtime,
and how the tests check this script without DeepSparse.

DeepSparse gets the model's fp32 weights as a static-shape opset-13 graph from torch's TorchScript
exporter, as SparseML exported for it: DeepSparse 1.8.0 (the last release with a cp311 wheel) runs
pruneofa's own export (the dynamo exporter's opset 18) only through its bundled onnxruntime, at dense
speed, and stops at an internal assertion on its int8 QDQ graph (docs/RESULTS.md, session 10).
`--graphs native,static-int8` adds a second worker on the int8 graph DeepSparse's own engine does take on
a CPU with VNNI: that opset-13 graph quantised statically by onnxruntime in QOperator form (QLinearMatMul,
int8 weights and uint8 activations per tensor, calibrated on 8 random batches of the benchmark's shape).
(onnxruntime's QDQ form of it runs at a tenth of that speed in DeepSparse 1.8, its dynamic form stops
at an assertion.) Then `sparse` is the like-for-like row for DeepSparse fp32, `sparse-int8` for int8.
`--burst N` times the last of N calls in a row per engine and turn: DeepSparse's threads go cold
between single alternating calls (its medians were then 1.7-2x its minima), so both are worth reporting.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
OUR_ENGINES = "torch,sparse,sparse-int8"


class Worker:
    """bench/onnx_worker.py running under `python`, one ONNX model loaded."""

    def __init__(self, python: str, engine: str, onnx_file: Path, inputs: dict[str, torch.Tensor],
                 threads: int, work_dir: Path):
        from pruneofa.errors import UserError

        npz = work_dir / "inputs.npz"
        np.savez(npz, **{name: tensor.numpy() for name, tensor in inputs.items()})
        command = [python, str(HERE / "onnx_worker.py"), "--engine", engine, "--onnx", str(onnx_file),
                   "--inputs", str(npz), "--input-order", ",".join(_onnx_input_names(onnx_file)),
                   "--threads", str(threads)]
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        except OSError as err:
            raise UserError(f"cannot start --other-python {python} ({err.strerror})",
                            "pass the python of the venv where DeepSparse is installed") from None
        self.hello = self._read()
        if "error" in self.hello:
            self.close()
            raise UserError(self.hello["error"], f"pip install {engine} in that venv, or pass another --other-python")
        self.work_dir = work_dir

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            from pruneofa.errors import UserError

            raise UserError(f"the worker ({self.process.args[0]}) exited without answering (code "
                            f"{self.process.wait()})", "run bench/onnx_worker.py in that venv by hand to see why")
        return json.loads(line)

    def _ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def seconds(self) -> float:
        return self._ask("run")["seconds"]

    def output(self) -> torch.Tensor:
        path = self.work_dir / "output.npy"
        self._ask(f"save {path}")
        return torch.from_numpy(np.load(path))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)


def _onnx_input_names(onnx_file: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def torchscript_onnx(model: torch.nn.Module, out: Path, inputs: dict[str, torch.Tensor]) -> Path:
    """`model` (plain fp32) through torch's TorchScript exporter at opset 13, eager attention, the shapes
    of `inputs` fixed: the kind of graph DeepSparse's engine was built for (SparseML exported so)."""
    import copy
    import warnings

    from pruneofa.bench.engines import primary_output

    model = copy.deepcopy(model).eval()
    model.set_attn_implementation("eager")  # opset 13 has no scaled_dot_product_attention
    names = list(inputs)

    class Entry(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return primary_output(self.model(**dict(zip(names, tensors))))

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, and says so
        torch.onnx.export(Entry(), tuple(inputs.values()), str(out), dynamo=False, opset_version=13,
                          input_names=names, output_names=["output"])
    return out


def static_int8_onnx(fp32_file: Path, out: Path, vocab_size: int, names: list[str], batch: int, seq_len: int) -> Path:
    """`fp32_file` quantised by onnxruntime, static QOperator form (see the module docstring)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from pruneofa.bench.inputs import make_inputs

    class RandomBatches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{k: v.numpy() for k, v in make_inputs(vocab_size, names, batch, seq_len,
                                                                          seed=100 + s).items()} for s in range(8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32_file), str(out), RandomBatches(), quant_format=QuantFormat.QOperator,
                    op_types_to_quantize=["MatMul"], per_channel=False, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return out


def calibrated_qat_dir(model_dir: Path, vocab_size: int, seq_len: int, out: Path) -> Path:
    """A QAT dir of `model_dir`: observers calibrated on 8 random batches, no training (speed only).
    Written beside `out` and renamed into place (bench_random.saved_once)."""
    from bench_random import saved_once  # this script's folder is on sys.path

    from pruneofa.bench.inputs import make_inputs, model_input_names
    from pruneofa.modeldir import load_plain
    from pruneofa.quantization import calibrate, prepare_qat, save_qat

    if out.is_dir():
        return out
    model = prepare_qat(load_plain(model_dir).eval())
    names = model_input_names(model.config)
    calibrate(model, [make_inputs(vocab_size, names, 4, seq_len, seed=s) for s in range(8)])
    return saved_once(out, lambda partial: save_qat(model, partial))


def alternate(ours: dict, workers: dict[str, Worker], rounds: int, warmup: int, seed: int = 0,
              burst: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each engine: every round runs all of them, in a new random order (as
    pruneofa.bench.timing.interleaved, except that a worker's seconds are its own, without the pipe).
    burst > 1: each engine's turn is `burst` calls in a row and only the last one counts, so every engine is
    timed warm (its threads awake, its caches its own), as in a loop of its own, yet in the same window."""
    times: dict[str, list[float]] = {engine: [] for engine in [*ours, *workers]}
    order, rng = list(times), random.Random(seed)
    for i in range(warmup + rounds):
        rng.shuffle(order)
        for engine in order:
            for _ in range(burst):
                if engine in workers:
                    seconds = workers[engine].seconds()
                else:
                    start = time.perf_counter()
                    ours[engine]()
                    seconds = time.perf_counter() - start
            if i >= warmup:
                times[engine].append(seconds)
    return times


def compare(model_dir: Path, args: argparse.Namespace) -> dict:
    from pruneofa.bench.accuracy import compare as compare_outputs
    from pruneofa.bench.artifacts import ArtifactStore, load_source
    from pruneofa.bench.engines import load_engine, spec_of
    from pruneofa.bench.inputs import make_inputs, model_input_names
    from pruneofa.runtime.build import cpu_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = load_source(model_dir)
        store = ArtifactStore(source, work)
        inputs = make_inputs(source.plain.config.vocab_size, model_input_names(source.plain.config),
                             args.batch_size, args.seq_len)
        graphs = {}  # the worker engine's graphs, each in a worker of its own: "fp32 opset-13" -> file
        wanted = args.graphs.split(",")
        if "native" in wanted and args.other_engine == "deepsparse":  # the fp32 graph DeepSparse takes (docstring)
            graphs["fp32 opset-13"] = torchscript_onnx(source.plain, work / "deepsparse.onnx", inputs)
        elif "native" in wanted:
            onnx_kind = "onnx-qdq" if source.kind == "qat" else "onnx-fp32"
            graphs["int8 QDQ" if onnx_kind == "onnx-qdq" else "fp32"] = store.get(onnx_kind).path
        if "static-int8" in wanted:
            fp32 = graphs.get("fp32 opset-13") or torchscript_onnx(source.plain, work / "opset13.onnx", inputs)
            graphs["int8 QLinearMatMul opset-13"] = static_int8_onnx(
                fp32, work / "static-int8.onnx", source.plain.config.vocab_size, list(inputs), args.batch_size,
                args.seq_len)
        ours = {}
        for engine in args.engines.split(","):
            ours[engine] = load_engine(engine, store.get(spec_of(engine).artifact).path, args.threads).bind(inputs)
        workers: dict[str, Worker] = {}
        try:
            for graph, onnx_file in graphs.items():
                sub = work / f"worker{len(workers)}"
                sub.mkdir()
                workers[f"{args.other_engine} ({graph} ONNX)"] = Worker(args.other_python, args.other_engine,
                                                                       onnx_file, inputs, args.threads, sub)
            reference = ours["torch"]() if "torch" in ours else None
            errors = {}
            if reference is not None:
                for engine, call in ours.items():
                    errors[engine] = compare_outputs(call(), reference, spec_of(engine).precision)["rel_err"]
                for name, worker in workers.items():
                    errors[name] = compare_outputs(worker.output(), reference, "int8")["rel_err"]
            times = alternate(ours, workers, args.rounds, args.warmup, burst=args.burst)
        finally:
            for worker in workers.values():
                worker.close()
    medians = {engine: statistics.median(seconds) for engine, seconds in times.items()}
    base = medians.get("torch")
    rows = [{"engine": engine, "median_ms": 1e3 * m, "min_ms": 1e3 * min(times[engine]),
             "x_dense_fp32": (base / m) if base else None, "rel_error": errors.get(engine)}
            for engine, m in medians.items()]
    return {"model": str(model_dir), "batch": args.batch_size, "seq_len": args.seq_len, "threads": args.threads,
            "rounds": args.rounds, "warmup": args.warmup, "burst": args.burst,
            "other": next(iter(workers.values())).hello, "rows": rows,
            "cpu": cpu_model() or "unknown CPU"}


def format_table(result: dict) -> str:
    burst = f", the last of {result['burst']} calls in a row timed" if result.get("burst", 1) > 1 else ""
    lines = [f"{result['cpu']}, batch {result['batch']} x {result['seq_len']}, {result['threads']} threads, "
             f"{result['rounds']} alternating rounds after {result['warmup']} warm-up{burst}",
             "| engine | median ms | min ms | x dense fp32 | rel. error |", "|---|---:|---:|---:|---:|"]
    for row in result["rows"]:
        x = f"{row['x_dense_fp32']:.2f}" if row["x_dense_fp32"] else "-"
        err = f"{row['rel_error']:.1e}" if row["rel_error"] is not None else "-"
        lines.append(f"| {row['engine']} | {row['median_ms']:.2f} | {row['min_ms']:.2f} | {x} | {err} |")
    return "\n".join(lines)


def _graph_list(text: str) -> str:
    if not text or set(text.split(",")) - {"native", "static-int8"}:
        raise argparse.ArgumentTypeError(f"{text!r}: name one or both of native, static-int8 (comma-separated)")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("model_dir", nargs="?", type=Path)
    source.add_argument("--random-shape", choices=("small", "base"), help="a random BERT of that shape, pruned")
    parser.add_argument("--sparsity", type=float, default=0.9, help="with --random-shape")
    parser.add_argument("--qat", action="store_true", help="calibrate a QAT dir first: int8 QDQ for the worker")
    parser.add_argument("--other-python", required=True, help="python of the venv where DeepSparse is installed")
    parser.add_argument("--other-engine", choices=("deepsparse", "onnxruntime"), default="deepsparse")
    parser.add_argument("--graphs", default="native", type=_graph_list,
                        help="the worker engine's graphs, each in a worker of its own, comma-separated: native "
                             "(DeepSparse: fp32 opset-13; onnxruntime: pruneofa's export), static-int8 "
                             "(onnxruntime's static int8 QLinearMatMul form of the opset-13 graph)")
    parser.add_argument("--engines", default=OUR_ENGINES, help="ours, comma-separated (pruneofa bench's names)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--burst", type=int, default=1,
                        help="calls per engine per turn, the last one timed (warm engines; default 1: cold turns)")
    parser.add_argument("--priority", action="store_true", help="own scheduler group, raised weight")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)

    from pruneofa.errors import UserError

    try:
        if args.priority:
            from runtime_speed import raise_priority  # this script's folder is on sys.path

            print(f"scheduler group weight: {raise_priority()}", flush=True)
        model_dir = args.model_dir
        if args.random_shape:
            from bench_random import random_pruned_dir

            model_dir = random_pruned_dir(args.random_shape, args.sparsity)
        if args.qat:
            from transformers import AutoConfig

            vocab = AutoConfig.from_pretrained(model_dir).vocab_size
            model_dir = calibrated_qat_dir(model_dir, vocab, args.seq_len, Path(f"{model_dir}-qat"))
        result = compare(Path(model_dir), args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(format_table(result))
    if args.json:
        from pruneofa.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
