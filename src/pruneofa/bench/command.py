"""`pruneofa bench MODEL_DIR [--batch-sizes 1,8] [--seq-len 128] [--engines a,b] [--rounds N] [--warmup N]
[--threads N] [--json] [--output-dir DIR] [--no-memory] [--baseline DIR] [--compact] [--encode|--decode]`: the CLI's side of
run_benchmark, with the options parsed into one `BenchOptions`.

Bad input (a missing model dir, an unknown engine, a bad batch-size list, an output dir that is a
file) ends with one line and exit code 2 before anything is measured or written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pruneofa.bench.options import BenchOptions
from pruneofa.errors import UserError


def run_bench_command(model_dir: str, options: BenchOptions | None = None, as_json: bool = False,
                      output_dir: str | None = None) -> str:
    """Run the benchmark; returns the text to print (markdown table or JSON), after writing
    OUTPUT_DIR/bench.json when asked."""
    from pruneofa.bench import format_table, run_benchmark, write_bench_json

    out = Path(output_dir) if output_dir else None
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--output-dir '{out}' is a file", "pass a directory (bench.json is written into it)")
    result = run_benchmark(model_dir, options)
    if out is not None:
        print(f"bench: wrote {write_bench_json(result, out)}", file=sys.stderr)
    return json.dumps(result, indent=1) if as_json else format_table(result)


def run_bench_step(model_dir: str, output_dir: str, as_json: bool = False, **options: Any) -> str:
    """The pipeline's `bench` step: its overrides are `BenchOptions`' names (`model` being model_dir)."""
    return run_bench_command(model_dir, BenchOptions.parse(**options), as_json, output_dir)
