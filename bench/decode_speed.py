"""GPT-2 (12 x 768) per-token decode: what sparsity buys inside the int8 engine, not only against fp32.

    .venv/bin/python bench/decode_speed.py --threads 2 --priority
    .venv/bin/python bench/decode_speed.py --threads 2 --priority --pattern block:1x4
    .venv/bin/python bench/decode_speed.py --threads 1 --breakdown     # time inside the Linears vs the rest

The random GPT-2 of bench_random.py (`--random-shape gpt2`, pruned one-shot per layer, LM head dense),
one decode step after 128 cached tokens at batch 1, exactly as `pruneofa bench --decode` times it
(pruneofa.bench.decode.DecodeEngine), on: torch (dense fp32, the reference), sparse-int8, and
dense-int8-native: the same engine with every Linear on its dense int8 kernel (sparse_threshold=inf),
i.e. the model as if unpruned, so that sparse-int8 against it is sparsity's own share; and
sparse-int8-transformers: sparse-int8 with transformers' GPT2Model forward around the same kernels
instead of the runtime's direct decoder path (`runtime/fused_decoder.py`). Interleaved
rounds in a shuffled order after a warm-up, wall-clock medians; --priority as in bench_random.py.
--breakdown: then, per engine, the median time of a step spent inside its Linear modules (GPT-2's Conv1D
or their runtime replacements, and the LM head; hooks around each call) and outside them (transformers'
forward: embeddings, LayerNorms, attention with the KV cache, GELU, residuals, Python).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import warnings

import torch

from bench_random import random_pruned_dir  # this script's folder is on sys.path

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--pattern", default="unstructured")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--priority", action="store_true")
    ap.add_argument("--breakdown", action="store_true")
    args = ap.parse_args()
    if args.priority:
        from runtime_speed import raise_priority

        print(f"scheduler group weight: {raise_priority()}")
    import os

    from transformers import AutoModelForCausalLM

    import pruneofa.runtime as rt
    from pruneofa.bench import timing
    from pruneofa.bench.decode import DecodeEngine
    from pruneofa.bench.inputs import make_inputs
    from pruneofa.runtime.build import cpu_model
    from pruneofa.runtime.fused_decoder import unfuse_decoders

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(random_pruned_dir("gpt2", args.sparsity, pattern=args.pattern)).eval()
    via_transformers = rt.load(model, engine="sparse-int8", threads=args.threads)
    unfuse_decoders(via_transformers.model)
    engines = {"torch": model,
               "sparse-int8": rt.load(model, engine="sparse-int8", threads=args.threads),
               "sparse-int8-transformers": via_transformers,
               "dense-int8-native": rt.load(model, engine="sparse-int8", threads=args.threads, sparse_threshold=math.inf)}
    inputs = make_inputs(model.config.vocab_size, ["input_ids", "attention_mask"], 1, args.seq_len + 1)
    calls = {name: DecodeEngine(m).bind(inputs, "decode") for name, m in engines.items()}
    load = os.getloadavg()[0]
    times = timing.interleaved(calls, args.rounds, args.warmup, random.Random(0))
    median = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    print(f"CPU {cpu_model()}, {args.threads} threads, GPT-2 12 x 768 {args.sparsity:g} {args.pattern}, decode after "
          f"{args.seq_len} tokens, {args.rounds} rounds, load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    print(engines["sparse-int8"].report.summary())
    for name, ms in median.items():
        print(f"{name}: {ms:.2f} ms, {median['torch'] / ms:.2f}x dense fp32")
    print(f"sparsity's share (dense-int8-native / sparse-int8): {median['dense-int8-native'] / median['sparse-int8']:.2f}x")
    if args.breakdown:
        for name, m in engines.items():
            inside, total = breakdown(getattr(m, "model", m), calls[name], args.rounds)
            print(f"{name}: step {total:.2f} ms = Linears and LM head {inside:.2f} ms + the rest {total - inside:.2f} ms")


def breakdown(model: torch.nn.Module, step, rounds: int) -> tuple[float, float]:
    """Median ms of a step inside the model's Linear-like modules (those with in/out features or a Conv1D),
    and of the whole step."""
    import time

    from pruneofa.runtime.layers import SparseInt8Linear, SparseLinear
    from pruneofa.sparsity.masks import PRUNABLE_TYPES

    spent, started = [0.0], {}
    kinds = (*PRUNABLE_TYPES, SparseLinear, SparseInt8Linear)
    hooks = []
    for module in model.modules():
        if isinstance(module, kinds):
            hooks.append(module.register_forward_pre_hook(lambda mod, _: started.__setitem__(mod, time.perf_counter())))
            hooks.append(module.register_forward_hook(
                lambda mod, _, __: spent.__setitem__(0, spent[0] + time.perf_counter() - started[mod])))
    inside, total = [], []
    for _ in range(rounds):
        spent[0], t0 = 0.0, time.perf_counter()
        step()
        total.append(time.perf_counter() - t0)
        inside.append(spent[0])
    for hook in hooks:
        hook.remove()
    return 1e3 * statistics.median(inside), 1e3 * statistics.median(total)


if __name__ == "__main__":
    main()
