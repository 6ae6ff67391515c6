"""What the student's attention dropout costs one attention layer on a CPU (issue #15: the prune step's time).

    python bench/attention_dropout_cost.py [--batch-size 16] [--seq-len 128] [--heads 12] [--head-dim 32]
                                           [--threads 1] [--rounds 10] [--warmup 2] [--json out.json]

The offline default's attention (MiniLM-L6: 12 heads of 32, a float additive mask as transformers passes it)
in three ways, forward and forward + backward:
  sdpa               torch's scaled_dot_product_attention, no dropout (the teacher, in eval mode)
  sdpa-dropout       the same with dropout_p 0.1 (the student, in training: BERT's attention_probs_dropout_prob)
  eager-dropout      softmax(QK^T / sqrt(d) + mask), dropout, then @V: transformers' eager attention
  packed-dropout     the same with a mask drawn four elements per random word
                     (`pruneofa.train.cpu_dropout`, what training on a CPU runs by default)
A CPU's SDPA has no fused kernel for dropout and takes its math path. Rounds interleave the variants in a new
random order each (`pruneofa.bench.timing.interleaved`); medians after warm-up.
"""

from __future__ import annotations

import argparse
import random
import statistics

import types

import torch
import torch.nn.functional as F

from pruneofa.bench.timing import add_round_options, interleaved, report_result
from pruneofa.train.cpu_dropout import attention_with_packed_dropout

DROPOUT = 0.1  # BERT's attention_probs_dropout_prob


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + mask
    return F.dropout(torch.softmax(scores, dim=-1), p, training=True) @ v


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=32)
    add_round_options(parser, threads=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (args.batch_size, args.heads, args.seq_len, args.head_dim)
    q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
    mask = torch.zeros(args.batch_size, 1, args.seq_len, args.seq_len)
    training_layer = types.SimpleNamespace(training=True, is_causal=False)  # what the attention function reads
    variants = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        "sdpa-dropout": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=DROPOUT),
        "eager-dropout": lambda: eager_attention(q, k, v, mask, DROPOUT),
        "packed-dropout": lambda: attention_with_packed_dropout(training_layer, q, k, v, mask, DROPOUT)[0],
    }

    def forward_only(fn):  # with autograd recording, as the training student's forward does
        return lambda: fn()

    def with_backward(fn):
        def call():
            fn().sum().backward()
            for t in (q, k, v):
                t.grad = None
        return call

    calls = {f"{name} forward": forward_only(fn) for name, fn in variants.items()}
    calls |= {f"{name} forward+backward": with_backward(fn) for name, fn in variants.items()}
    times = interleaved(calls, args.rounds, args.warmup, random.Random(0))
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    result = {"shape": list(shape), "threads": args.threads, "rounds": args.rounds, "median_ms": ms}
    print(f"attention of {args.batch_size} x {args.seq_len} tokens, {args.heads} heads of {args.head_dim}, "
          f"{args.threads} thread(s), medians of {args.rounds} interleaved rounds")
    print("| variant | forward (ms) | forward + backward (ms) |\n|---|---:|---:|")
    for name in variants:
        print(f"| {name} | {ms[f'{name} forward']:.1f} | {ms[f'{name} forward+backward']:.1f} |")
    return report_result(result, args.json, print_json=False)


if __name__ == "__main__":
    main()
