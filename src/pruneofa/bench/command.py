"""`pruneofa bench MODEL_DIR [--batch-sizes 1,8] [--seq-len 128] [--engines a,b] [--rounds N] [--warmup N]
[--threads N] [--json] [--output-dir DIR] [--no-memory] [--baseline DIR] [--compact] [--encode]`: the CLI's side of
run_benchmark.

Bad input (a missing model dir, an unknown engine, a bad batch-size list, an output dir that is a
file) ends with one line and exit code 2 before anything is measured or written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pruneofa.errors import UserError


def parse_batch_sizes(value: str | int | list[int]) -> tuple[int, ...]:
    """'1,8' (the CLI), 8 or [1, 8] (a pipeline step's YAML) -> (1, 8)."""
    parts = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
    try:
        sizes = tuple(int(str(part).strip()) for part in parts)
    except ValueError:
        sizes = ()
    if not sizes or any(b < 1 for b in sizes):
        raise UserError(f"bad --batch-sizes '{value}'", "pass positive integers separated by commas, e.g. --batch-sizes 1,8")
    return sizes


def parse_engines(value: str | list[str] | None) -> list[str] | None:
    """'sparse,ort' (the CLI) or [sparse, ort] (YAML) -> ["sparse", "ort"]; None: every engine."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    return [str(e).strip() for e in parts if str(e).strip()]


def run_bench_command(model_dir: str, batch_sizes: str | int | list[int] = "1", seq_len: int = 128,
                      engines: str | list[str] | None = None,
                      rounds: int = 20, warmup: int = 3, threads: int | None = None, as_json: bool = False,
                      output_dir: str | None = None, measure_memory: bool = True, baseline: str | None = None,
                      compact: bool = False, encode: bool = False) -> str:
    """Run the benchmark; returns the text to print (markdown table or JSON), after writing
    OUTPUT_DIR/bench.json when asked. Also the pipeline's `bench` step (its overrides are these
    keyword arguments, `model` being model_dir)."""
    from pruneofa.bench import format_table, run_benchmark, write_bench_json

    out = Path(output_dir) if output_dir else None
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--output-dir '{out}' is a file", "pass a directory (bench.json is written into it)")
    result = run_benchmark(model_dir, parse_batch_sizes(batch_sizes), seq_len, parse_engines(engines), rounds, warmup,
                           threads, measure_memory, baseline=baseline, compact=compact, encode=encode)
    if out is not None:
        print(f"bench: wrote {write_bench_json(result, out)}", file=sys.stderr)
    return json.dumps(result, indent=1) if as_json else format_table(result)
