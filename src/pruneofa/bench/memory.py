"""Peak memory of one engine: a fresh subprocess loads the engine's artifact and runs one batch.

    peak_mb = peak RSS (VmHWM, reset after the imports) - RSS after the imports (torch, transformers
              and its model class, onnxruntime, pruneofa with the sparse kernels' library)

So it counts the weights as the engine holds them, its runtime buffers, the activations of the
batch and allocator overhead, and not the libraries' code, which every engine shares. One process
per engine and batch size: in the timing process the engines share one heap, and memory one
engine frees is reused by the next, so in-process RSS growth cannot be attributed to an engine.
Not ru_maxrss: after fork + exec it starts from the parent's RSS at the fork (the kernel carries
the old address space's peak over), which would charge the benchmark's own memory to every engine.
The subprocess uses the same loader, threads and inputs as the timing process.

Run as `python -m pruneofa.bench.memory SPEC_JSON`; prints one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

METHOD = ("peak RSS (VmHWM) of a fresh process while it loads the engine's artifact and runs one batch, "
          "minus its RSS after importing the libraries (torch, transformers' model class, onnxruntime, pruneofa)")


def _status_mb(field: str) -> float | None:
    """A VmRSS / VmHWM line of /proc/self/status in MB, or None where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux, `5 > /proc/self/clear_refs`)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_in_subprocess(engine: str, artifact_path: Path, threads: int, batch: int, seq_len: int,
                          vocab_size: int, input_names: list[str], timeout_s: float = 600) -> dict[str, Any]:
    """{"peak_mb", "held_mb", "peak_rss_mb", "start_rss_mb"} or {"error": one line}. held_mb: RSS after the
    call, less the start: what the engine keeps once loading's temporary buffers are gone."""
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

    import pruneofa.modeldir  # noqa: F401
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
    start = _status_mb("VmRSS")
    if start is None or not _reset_peak():
        return {"error": "needs Linux procfs (/proc/self/status and clear_refs) to measure a peak"}
    engine = load_engine(spec["engine"], Path(spec["artifact"]), spec["threads"], spec["seq_len"])
    engine.bind(inputs)()
    peak, held = _status_mb("VmHWM"), _status_mb("VmRSS")
    return {"peak_mb": peak - start, "held_mb": held - start, "peak_rss_mb": peak, "start_rss_mb": start}


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    print(json.dumps(_child(json.loads(sys.argv[1]))))
