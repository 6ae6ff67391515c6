"""Per-Linear cost of a decoder's step: GPT-2's layer shapes, a few tokens at a time.

    .venv/bin/python bench/decode_layers.py --threads 1 --clock thread          # 90%, 1-3 tokens
    .venv/bin/python bench/decode_layers.py --threads 1 --clock thread --tokens 1 --sparsity 0.5 0.7 0.8 0.9
    .venv/bin/python bench/decode_layers.py --threads 1 --clock thread --blocks     # 1x4 blocks pruned

One call of each module (a pruneofa.runtime layer or the PyTorch one it replaces), token-major input
[tokens, in_features] as transformers passes it, interleaved rounds, medians in microseconds (`--clock
thread`: CPU time of the calling thread, steady on a shared machine with --threads 1). Up to 2 tokens the
runtime's layers run the dot-product path (runtime/csrc/gemv.h), from 3 the tiled kernels: the rows at
2 and 3 tokens show the crossover. Engines: torch (nn.Linear, MKL fp32), torch-int8 (fbgemm dynamic
int8), sparse (fp32 CSR), sparse-int8 (int8 quads), dense-int8-native (the runtime's dense int8 kernel,
what "sparse-int8" runs an unpruned layer on, e.g. GPT-2's LM head). Random weights pruned by magnitude,
per weight or (--blocks) per aligned 1x4 block (the int8 quads then take their "blocks" layout).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from torch import nn

from pruneofa.bench import timing

SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]  # c_attn, attn c_proj, c_fc, mlp c_proj
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def modules(n_in: int, n_out: int, sparsity: float, threads: int, blocks: bool) -> dict[str, nn.Module]:
    from pruneofa.runtime.dense_int8 import dynamic_int8_linear
    from pruneofa.runtime.layers import SparseInt8Linear, SparseLinear

    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        w = lin.weight
        score = w.abs().view(n_out, -1, 4).sum(-1).repeat_interleave(4, 1) if blocks else w.abs()
        w.mul_(score > score.flatten().kthvalue(max(1, int(sparsity * w.numel()))).values)
    return {"torch": lin, "torch-int8": dynamic_int8_linear(lin), "sparse": SparseLinear(lin, threads),
            "sparse-int8": SparseInt8Linear(lin, threads),
            "dense-int8-native": SparseInt8Linear(lin, threads, layout="dense")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsity", nargs="+", type=float, default=[0.9])
    ap.add_argument("--tokens", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--blocks", action="store_true", help="prune aligned 1x4 blocks instead of single weights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    if args.clock == "thread" and args.threads != 1:
        ap.error("--clock thread needs --threads 1")
    from pruneofa.runtime.build import cpu_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU {cpu_model()}, {args.threads} thread(s), clock {args.clock}, {args.rounds} rounds, medians in us, "
          f"pruned {'in 1x4 blocks' if args.blocks else 'per weight'}")
    print("| layer | sparsity | tokens | torch | torch-int8 | sparse | sparse-int8 | dense-int8-native |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n_in, n_out in SHAPES:
        for sparsity in args.sparsity:
            mods = modules(n_in, n_out, sparsity, args.threads, args.blocks)
            for m in args.tokens:
                x = torch.randn(m, n_in)
                calls = {name: (lambda mod=mod: mod(x)) for name, mod in mods.items()}
                with torch.no_grad():
                    times = timing.interleaved(calls, args.rounds, args.warmup, random.Random(0), CLOCKS[args.clock])
                cells = " | ".join(f"{1e6 * statistics.median(times[name]):.0f}" for name in mods)
                print(f"| {n_in}->{n_out} | {sparsity:g} | {m} | {cells} |")


if __name__ == "__main__":
    main()
