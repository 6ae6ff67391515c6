"""The benchmark result: the summary the pipeline report reads, the markdown table, bench.json.

    {"model_dir", "model": {architecture, source, sparsity}, "settings": {...}, "environment": {...},
     "rows": [{"engine", "kernel", "batch", ["phase": prefill | decode, with --decode], "median_ms", "p90_ms", "seq_per_s", "speedup_vs_torch", "size_mb",
               "peak_mb", "layers", "unfused", "max_abs_diff", "cosine", "rel_err", "matches_reference",
               "threads", ...}],
     "skipped": [{"engine", "reason"}],
     "summary": {"batch", "seq_len", "dense_fp32_ms", "sparse_fp32_ms", "sparse_int8_ms",
                 "best_engine", "best_ms", "best_speedup"}}

kernel: which of the runtime's kernel sets ran the engine's Linear layers ("avx512-vnni", "avx512",
"avx2-vnni", "avx2", "portable": the build picks one from the CPU; "+amx" where a call of the row's inputs
ran layers on AMX tiles: the runtime counts them), None for engines that run none of them; environment.kernels
is the set this machine builds (with "+amx" where the tiles are on), environment.cpu_model the CPU. unfused (runtime
engines): the transformer blocks its fused encoder does not run, per family with the reason; there
transformers' forward runs attention, norms and activations in PyTorch between the engine's Linear kernels.
speedup_vs_torch is the ratio of medians, torch fp32 / engine, at the same batch size in the same
run (above 1: faster than dense fp32 PyTorch). With `--baseline DIR` a "baseline" row (dense fp32
PyTorch on DIR, e.g. the uncompacted model a compacted one came from) is timed in the same rounds,
every row gets speedup_vs_baseline, and the summary's dense_fp32_ms and best_speedup refer to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pruneofa.fileio import atomic_write_text

BENCH_FILE = "bench.json"


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Latencies at the smallest batch size run (batch 1 by default), for the pipeline report:
    dense_fp32_ms is the torch engine (sparsity does not change a dense engine's time, so it stands
    for the dense model of the same shape), sparse_fp32_ms / sparse_int8_ms the sparse engines.
    The best engine is the fastest one whose output matches the reference. With --decode: the per-token
    decode step (its `phase` rows; the prefill rows stay in the table)."""
    rows = [r for r in rows if r.get("phase", "decode") == "decode"]
    if not rows:
        return {}
    batch = min(r["batch"] for r in rows)
    at_batch = {r["engine"]: r for r in rows if r["batch"] == batch}
    correct = [r for name, r in at_batch.items() if r["matches_reference"] and name != "baseline"]
    best = min(correct, key=lambda r: r["median_ms"])
    median = {name: r["median_ms"] for name, r in at_batch.items()}
    dense = "baseline" if "baseline" in median else "torch"
    return {"batch": batch, "seq_len": best["seq_len"], "dense_fp32_ms": median.get(dense),
            "sparse_fp32_ms": median.get("sparse"), "sparse_int8_ms": median.get("sparse-int8"),
            "best_engine": best["engine"], "best_ms": best["median_ms"],
            "best_speedup": best.get("speedup_vs_baseline", best["speedup_vs_torch"])}


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    settings, env, model = result["settings"], result["environment"], result["model"]
    head = (f"pruneofa bench {result['model_dir']}: {model['architecture']} ({model['source']} dir), "
            f"{100 * model['sparsity']:.1f}% zeros in the prunable layers, seq {settings['seq_len']}, "
            f"{settings['threads']} threads, {settings['rounds']} interleaved rounds after {settings['warmup']} "
            f"warm-up; torch {env['torch']}, onnxruntime {env['onnxruntime']}; load average (1 min) "
            f"{env['loadavg_before'][0]:.2f} before, {env['loadavg_after'][0]:.2f} after; CPU "
            f"{env.get('cpu_model') or env['cpu']}, runtime kernels {env.get('kernels') or 'unavailable'}")
    baseline = result.get("baseline")
    if baseline:
        head += f"; baseline (dense fp32 PyTorch, same rounds): {baseline}"
    if settings.get("encode") or settings.get("decode"):
        head += f"; {'encode' if settings.get('encode') else 'decode'}: {settings['inputs']}"
    phases = bool(settings.get("decode"))
    lines = [head, "",
             "| engine | batch | " + ("phase | " if phases else "") + "median ms | p90 ms | seq/s | x vs torch fp32 | " + ("x vs baseline | " if baseline else "")
             + "size MB | peak MB | held MB | max diff | rel err | matches | kernel |",
             "|---|---:|" + ("---|" if phases else "") + "---:|---:|---:|---:|" + ("---:|" if baseline else "") + "---:|---:|---:|---:|---:|---|---|"]
    for r in result["rows"]:
        vs_baseline = f"{r['speedup_vs_baseline']:.2f} | " if baseline else ""
        phase = f"{r['phase']} | " if phases else ""
        lines.append(f"| {r['engine']} | {r['batch']} | {phase}{r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['seq_per_s']:.1f} | "
                     f"{r['speedup_vs_torch']:.2f} | {vs_baseline}{r['size_mb']:.1f} | {_num(r.get('peak_mb'), '.0f')} | "
                     f"{_num(r.get('held_mb'), '.0f')} | "
                     f"{r['max_abs_diff']:.1e} | {r['rel_err']:.1e} | {'yes' if r['matches_reference'] else 'NO'} | {r.get('kernel') or '-'} |")
    lines.append("")
    lines += [f"skipped {s['engine']}: {s['reason']}" for s in result["skipped"]]
    unfused = {r["engine"]: r["unfused"] for r in result["rows"] if r.get("unfused")}
    lines += [f"{engine}: PyTorch runs between its Linear kernels in {'; '.join(blocks)}"
              for engine, blocks in unfused.items()]
    lines.append(f"peak MB: {settings['memory']}; held MB: the same process's RSS after the call, less the start")
    summary = result["summary"]
    if summary:
        dense = "baseline dense fp32" if baseline else "dense fp32"
        step = "per-token decode, " if phases else ""
        lines.append(f"{step}batch {summary['batch']}: {dense} {summary['dense_fp32_ms']:.2f} ms, best {summary['best_engine']} "
                     f"{summary['best_ms']:.2f} ms ({summary['best_speedup']:.2f}x)")
    return "\n".join(lines)


def write_bench_json(result: dict[str, Any], out_dir: str | Path) -> Path:
    """Write out_dir/bench.json atomically (a reader sees the old file or the whole new one)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / BENCH_FILE
    atomic_write_text(path, json.dumps(result, indent=1))
    return path
