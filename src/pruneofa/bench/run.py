"""`run_benchmark`: every engine on one model directory, timed interleaved, checked against fp32.

Order of work: load the model dir, make each engine's artifact, load the engines, check each
output against the reference at every batch size, time all engines interleaved per batch size,
then (optionally) measure each engine's peak memory in its own subprocess.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from pruneofa.bench import accuracy, memory, timing
from pruneofa.bench.artifacts import Artifact, ArtifactStore, Unavailable, load_source
from pruneofa.bench.decode import INPUTS_DECODE, PHASES, load_decoder
from pruneofa.bench.engines import (
    REFERENCE,
    TorchEngine,
    load_encoder,
    load_engine,
    spec_of,
    unavailable_reason,
)
from pruneofa.bench.inputs import make_inputs, make_sentences, model_input_names
from pruneofa.bench.options import BenchOptions
from pruneofa.bench.results import summarize
from pruneofa.errors import UserError

BASELINE = "baseline"  # the row of --baseline MODEL_DIR
INPUTS_ENCODE = "a batch of English sentences of seq_len tokens, encoded: tokenization, forward, pooling"


def run_benchmark(model_dir: str | Path, options: BenchOptions | None = None,
                  work_dir: str | Path | None = None) -> dict[str, Any]:
    """Benchmark every applicable engine on `model_dir`; returns the result dict (see results.py).

    options (`BenchOptions`, default: its defaults):
    engines: names from `ENGINES` (default: all); the fp32 reference "torch" is always run. Engines
    that cannot apply are listed under "skipped" with the reason. threads: default
    `pruneofa.runtime.default_threads()`, used by torch, the sparse kernels and onnxruntime alike.
    baseline: another model dir (e.g. the uncompacted model an `export --compact` came from), run
    as dense fp32 PyTorch in the same interleaved rounds; the speed-ups are then against it.
    compact: first rebuild `model_dir` without its zero heads and FFN neurons (`export --compact`,
    into the work dir) and benchmark that, with `model_dir` itself as the baseline (unless one is given).
    encode: time sentence embeddings instead of the forward (`engines.ENCODE_ENGINES`): each call encodes
    `batch` sentences of `seq_len` tokens, tokenization and pooling included (no memory measured).
    decode: a causal LM's prefill of `seq_len` tokens and its per-token step with the KV cache
    (`decode.py`; no memory measured).
    work_dir: where the artifacts go (default: a temporary directory removed afterwards)."""
    from pruneofa.runtime import default_threads

    o = options or BenchOptions()
    names = o.engines_to_run()
    threads = o.threads or default_threads()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="pruneofa-bench-") as tmp:
            work = Path(work_dir) if work_dir else Path(tmp)
            served = _compacted(Path(model_dir), work) if o.compact else Path(model_dir)
            baseline = o.baseline or (model_dir if o.compact else None)
            result = _run(served, o.batch_sizes, o.seq_len, names, o.rounds, o.warmup, threads,
                          o.measure_memory and o.mode == "forward", work, o.seed,
                          Path(baseline) if baseline else None, o.mode)
            if o.compact:
                result["model_dir"], result["compacted"] = str(model_dir), True
            return result
    finally:
        torch.set_num_threads(threads_before)


def _run(model_dir: Path, batch_sizes: tuple[int, ...], seq_len: int, names: list[str], rounds: int, warmup: int,
         threads: int, measure_memory: bool, work_dir: Path, seed: int, baseline: Path | None,
         mode: str = "forward") -> dict[str, Any]:
    from pruneofa.sparsity.measure import sparsity_of_model

    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M %Z")
    source = load_source(model_dir)
    config = source.plain.config
    max_len, decoded = getattr(config, "max_position_embeddings", None), int(mode == "decode")
    if max_len is not None and seq_len + decoded > max_len:
        raise UserError(f"--seq-len {seq_len} is longer than the model's {max_len - decoded} positions"
                        + (" (one is left for the decoded token)" if decoded else ""),
                        f"pass --seq-len {max_len - decoded} or less")
    if mode == "decode" and not source.plain.can_generate():
        raise UserError(f"--decode needs a causal LM; {model_dir} holds a {type(source.plain).__name__}",
                        "pass a language model with its head (e.g. GPT2LMHeadModel), or drop --decode")
    model_info = {"architecture": type(source.plain).__name__, "source": source.kind,
                  "sparsity": sparsity_of_model(source.plain)["overall"]}
    tokenizer = _tokenizer(model_dir) if mode == "encode" else None
    loaded, artifacts, skipped = _load_engines(ArtifactStore(source, work_dir), names, threads, mode, seq_len)
    if baseline is not None:
        loaded[BASELINE], artifacts[BASELINE] = _load_baseline(baseline, config)
    del source  # the engines hold their own weights; the loader's copies would only inflate memory
    gc.collect()

    names_in = model_input_names(config)
    rows = []
    rng = random.Random(seed)
    for batch in batch_sizes:
        inputs = make_sentences(tokenizer, batch, seq_len, seed) if mode == "encode" else make_inputs(
            config.vocab_size, names_in, batch, seq_len + decoded, seed)
        for phase in PHASES if mode == "decode" else (None,):
            calls = {name: engine.bind(inputs, phase) if phase else engine.bind(inputs)
                     for name, engine in loaded.items()}
            rows += _timed_rows(calls, batch, seq_len, phase, rounds, warmup, rng, threads, skipped, artifacts,
                                loaded, baseline)
            loaded = {name: loaded[name] for name in calls}  # an engine that failed this batch is not run again
    del loaded, calls  # free the engines before the memory subprocesses start
    if measure_memory:
        _add_memory([r for r in rows if r["engine"] != BASELINE], artifacts, threads, config.vocab_size, names_in)
    return {
        "model_dir": str(model_dir), "model": model_info, "baseline": str(baseline) if baseline else None,
        "settings": {"batch_sizes": list(batch_sizes), "seq_len": seq_len, "rounds": rounds, "warmup": warmup,
                     "threads": threads, "clock": "wall (time.perf_counter)", "order": "shuffled every round",
                     "inputs": {"encode": f"{INPUTS_ENCODE} (--encode)", "decode": f"{INPUTS_DECODE} (--decode)"}.get(
                         mode, "random token ids of the vocabulary, full attention mask, one segment"),
                     "encode": mode == "encode", "decode": mode == "decode",
                     "accuracy_tolerance_rel_err": accuracy.TOLERANCE,
                     "memory": memory.METHOD if measure_memory else "not measured"},
        "environment": _environment(load_before, started),
        "rows": rows, "skipped": skipped, "summary": summarize(rows),
    }


def _timed_rows(calls: dict[str, Any], batch: int, seq_len: int, phase: str | None, rounds: int, warmup: int,
                rng: random.Random, threads: int, skipped: list[dict[str, str]], artifacts: dict[str, Artifact],
                loaded: dict[str, Any], baseline: Path | None) -> list[dict[str, Any]]:
    """Check every call against the reference, time them interleaved, and give a row per engine (an engine
    that fails its check leaves `calls` and joins `skipped`). phase: "prefill" | "decode" with --decode."""
    native = {name for name in calls if name in loaded and _is_native(loaded[name])}
    checks, tiles = _check_outputs(calls, batch, skipped, native)
    load_start = os.getloadavg()[0]
    times = timing.interleaved(calls, rounds, warmup, rng)
    load_end = os.getloadavg()[0]
    base = timing.latency_stats(times[REFERENCE], batch)["median_ms"]
    ratio_base = timing.latency_stats(times[BASELINE], batch)["median_ms"] if BASELINE in times else base
    rows = []
    for name in calls:
        stats = timing.latency_stats(times[name], batch)
        ratios = {"speedup_vs_torch": base / stats["median_ms"]}
        if BASELINE in times:
            ratios["speedup_vs_baseline"] = ratio_base / stats["median_ms"]
        rows.append({"engine": name, "batch": batch, "seq_len": seq_len, **({"phase": phase} if phase else {}),
                     **stats, **ratios, **checks[name],
                     "size_mb": artifacts[name].size_bytes / 1e6, "artifact": artifacts[name].kind,
                     "threads": threads, "loadavg_1min": [load_start, load_end],
                     "description": _description(name, baseline), **_layers(loaded[name], tiles.get(name, False))})
    return rows


def _load_engines(store: ArtifactStore, names: list[str], threads: int, mode: str = "forward",
                  seq_len: int = 128) -> tuple[dict, dict, list[dict[str, str]]]:
    """(engine name -> loaded engine, engine name -> its artifact, skipped engines with the reason); an engine that
    times its layouts at load does it at seq_len."""
    loaded, artifacts, skipped = {}, {}, []
    for name in names:
        reason = unavailable_reason(name)
        try:
            if reason is not None:
                raise Unavailable(reason)
            artifacts[name] = store.get(spec_of(name).artifact)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's eager-quantization deprecation notice, and the like
                load = {"encode": load_encoder, "decode": load_decoder}.get(mode, load_engine)
                loaded[name] = load(name, artifacts[name].path, threads, seq_len)
        except Unavailable as err:
            skipped.append({"engine": name, "reason": str(err)})
        except Exception as err:  # noqa: BLE001 - one engine failing to load must not hide the others
            if name == REFERENCE:
                raise
            skipped.append({"engine": name, "reason": f"failed to load: {type(err).__name__}: {err}".splitlines()[0]})
    return loaded, artifacts, skipped


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError):
        raise UserError(f"--encode needs the tokenizer of '{model_dir}'", "keep its tokenizer files in MODEL_DIR") from None


def _compacted(model_dir: Path, work_dir: Path) -> Path:
    from pruneofa.export.compact import export_compact_hf

    return export_compact_hf(model_dir, work_dir / "compact")


def _load_baseline(path: Path, config: Any) -> tuple[TorchEngine, Artifact]:
    """The baseline model dir (any dir the benchmark itself reads) as dense fp32 PyTorch; it must take
    the same inputs as the model."""
    model = load_source(path).plain
    if model.config.vocab_size != config.vocab_size:
        raise UserError(f"baseline '{path}' has a vocabulary of {model.config.vocab_size}, the model {config.vocab_size}",
                        "pass a baseline of the same model family and tokenizer")
    return TorchEngine(model, model.forward), Artifact("hf", path, sorted(path.glob("model*.safetensors")))


def _description(name: str, baseline: Path | None) -> str:
    if name == BASELINE:
        return f"dense fp32 PyTorch eager on the baseline {baseline}: the reference of the speed-ups"
    return spec_of(name).description


def _check_outputs(calls: dict[str, Any], batch: int, skipped: list[dict[str, str]],
                   native: set[str]) -> tuple[dict[str, dict[str, Any]], dict[str, bool]]:
    """Each engine's output against the reference's; an engine that fails here leaves `calls` and is
    listed in `skipped` (the reference failing is an error). Also, for the `native` engines (the runtime's),
    whether that call ran any Linear on AMX tiles (the runtime counts tile sessions)."""
    reference = calls[REFERENCE]()
    checks, on_tiles = {}, {}
    for name in list(calls):
        try:
            precision = spec_of(name).precision if name != BASELINE else "fp32"  # the baseline: fp32 PyTorch
            before = _tile_sessions() if name in native else 0
            output = calls[name]()
            on_tiles[name] = name in native and _tile_sessions() > before
            checks[name] = accuracy.compare(output, reference, precision)
        except Exception as err:  # noqa: BLE001 - an engine that cannot run this batch is reported, not fatal
            del calls[name]
            skipped.append({"engine": name, "reason": f"failed at batch {batch}: {type(err).__name__}: "
                                                      f"{err}".splitlines()[0]})
    return checks, on_tiles


NATIVE_PATHS = ("sparse", "sparse-int8", "dense-int8-native")  # Linear paths that run the runtime's C++ kernels


def _report(engine: Any) -> Any:
    return getattr(getattr(engine, "model", None), "report", None)


def _is_native(engine: Any) -> bool:
    report = _report(engine)
    return report is not None and any(layer.path in NATIVE_PATHS for layer in report.layers)


def _tile_sessions() -> int:
    """The runtime's count of (thread, layer) calls on AMX tiles so far; 0 without its kernels."""
    from pruneofa.runtime import kernels
    from pruneofa.runtime.build import kernels_available

    return kernels.tile_sessions() if kernels_available() else 0


def _layers(engine: Any, tiles: bool = False) -> dict[str, Any]:
    """A pruneofa.runtime model's per-layer paths, and which of the runtime's kernel sets ran them
    (`kernel`: "avx512-vnni", "avx512", "avx2-vnni", "avx2", "portable", with "+amx" where Linears on the
    dense int8 kernel ran on AMX tiles in a call of this row's inputs; None where no Linear runs on them)."""
    report = _report(engine)
    if report is None:
        return {"kernel": None}
    kernel = _kernel_isa(amx=tiles) if _is_native(engine) else None
    return {"layers": report.summary(), "unfused": report.unfused, "kernel": kernel}


def _kernel_isa(amx: bool = True) -> str | None:
    """The kernel set this machine builds; amx: name the AMX tiles too where they are in use."""
    from pruneofa.runtime import kernels
    from pruneofa.runtime.build import kernels_available

    if not kernels_available():
        return None
    return kernels.kernel_label() if amx else kernels.kernel_isa()


def _add_memory(rows: list[dict[str, Any]], artifacts: dict[str, Artifact], threads: int, vocab_size: int,
                input_names: list[str]) -> None:
    for row in rows:
        measured = memory.measure_in_subprocess(row["engine"], artifacts[row["engine"]].path, threads, row["batch"],
                                                row["seq_len"], vocab_size, input_names)
        row["peak_mb"] = measured.get("peak_mb")
        row["held_mb"] = measured.get("held_mb")
        row["peak_rss_mb"] = measured.get("peak_rss_mb")
        if "error" in measured:
            row["peak_error"] = measured["error"]


def _environment(load_before: tuple[float, float, float], started: str) -> dict[str, Any]:
    import onnxruntime
    import transformers

    from pruneofa.runtime.build import cpu_model
    from pruneofa.version import __version__

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "transformers": transformers.__version__,
            "pruneofa": __version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "kernels": _kernel_isa(),
            "started": started, "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
            "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())}
