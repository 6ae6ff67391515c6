"""Peak memory of one engine: a fresh subprocess loads the engine's artifact and runs one batch.

    peak_mb = ru_maxrss at exit - RSS after the imports (torch, transformers and its model class,
              onnxruntime, pruneofa with the sparse kernels' library)

So it counts the weights as the engine holds them, its runtime buffers, the activations of the
batch and allocator overhead, and not the libraries' code, which every engine shares. One process
per engine and batch size: in the timing process the engines share one heap, and memory one
engine frees is reused by the next, so in-process RSS growth cannot be attributed to an engine.
The subprocess uses the same loader, threads and inputs as the timing process.

Run as `python -m pruneofa.bench.memory SPEC_JSON`; prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

METHOD = ("peak RSS of a fresh process that loads the engine's artifact and runs one batch (ru_maxrss), "
          "minus its RSS after importing the libraries (torch, transformers' model class, onnxruntime, pruneofa)")


def _current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _max_rss_mb()  # not Linux: the peak so far, an upper bound of the current RSS


def _max_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def measure_in_subprocess(engine: str, artifact_path: Path, threads: int, batch: int, seq_len: int,
                          vocab_size: int, input_names: list[str], timeout_s: float = 600) -> dict[str, Any]:
    """{"peak_mb", "peak_rss_mb", "start_rss_mb"} or {"error": one line}."""
    spec = {"engine": engine, "artifact": str(artifact_path), "threads": threads, "batch": batch,
            "seq_len": seq_len, "vocab_size": vocab_size, "input_names": input_names}
    try:
        done = subprocess.run([sys.executable, "-m", "pruneofa.bench.memory", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {last}"}
    return json.loads(lines[-1])


def _import_libraries(artifact: Path) -> None:
    """Import everything the loaders import lazily, so that the start reading includes the code:
    transformers' model class (~100 MB of modules), the quantized Linear, the sparse kernels' library."""
    import onnxruntime  # noqa: F401
    import torch.ao.nn.quantized.dynamic  # noqa: F401
    import transformers

    import pruneofa.export.compressed  # noqa: F401
    import pruneofa.quantization.checkpoint  # noqa: F401
    from pruneofa.runtime import kernels_available

    kernels_available()  # loads (or builds) the shared library
    config = artifact / "config.json"
    if config.is_file():
        for arch in json.loads(config.read_text()).get("architectures") or []:
            getattr(transformers, arch, None)


def _child(spec: dict[str, Any]) -> dict[str, float]:
    import torch

    from pruneofa.bench.engines import load_engine
    from pruneofa.bench.inputs import make_inputs

    _import_libraries(Path(spec["artifact"]))
    torch.set_num_threads(spec["threads"])
    inputs = make_inputs(spec["vocab_size"], spec["input_names"], spec["batch"], spec["seq_len"])
    start = _current_rss_mb()
    engine = load_engine(spec["engine"], Path(spec["artifact"]), spec["threads"])
    engine.bind(inputs)()
    peak = _max_rss_mb()
    return {"peak_mb": peak - start, "peak_rss_mb": peak, "start_rss_mb": start}


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    print(json.dumps(_child(json.loads(sys.argv[1]))))
