"""`pruneofa bench`: latency, throughput, peak memory and file size of every inference engine on
one model directory, each against dense fp32 PyTorch measured in the same run.

    from pruneofa.bench import BenchOptions, run_benchmark, format_table, write_bench_json
    result = run_benchmark("runs/offline/rt-sparse-85", BenchOptions(batch_sizes=(1, 8), seq_len=128))
    print(format_table(result))
    write_bench_json(result, "runs/offline/bench")      # bench.json, read by the pipeline report

Engines (engines.py): torch (the reference), torch-int8, dense, dense-int8, sparse, sparse-int8
(pruneofa.runtime), ort, ort-int8 (onnxruntime dynamic int8), ort-qdq (QAT dirs only).
"""

from pruneofa.bench.engines import ENGINES
from pruneofa.bench.options import BenchOptions
from pruneofa.bench.results import BENCH_FILE, format_table, summarize, write_bench_json
from pruneofa.bench.run import run_benchmark

__all__ = ["BENCH_FILE", "ENGINES", "BenchOptions", "format_table", "run_benchmark", "summarize", "write_bench_json"]
