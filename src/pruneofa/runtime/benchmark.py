"""The benchmark of the runtime's engines (and PyTorch's and onnxruntime's) on a model directory.

    from pruneofa.runtime import benchmark
    result = benchmark.run_benchmark("runs/offline/rt-sparse-85", batch_sizes=(1, 8))
    print(benchmark.format_table(result))

The implementation lives in `pruneofa.bench` (one module per concept); this is its entry point
beside the engines it measures, and the target of the pipeline's `bench` step.
"""

from pruneofa.bench import BENCH_FILE, ENGINES, format_table, run_benchmark, summarize, write_bench_json
from pruneofa.bench.command import run_bench_command

__all__ = ["BENCH_FILE", "ENGINES", "format_table", "run_bench_command", "run_benchmark", "summarize",
           "write_bench_json"]
