"""What one AdamW update costs on a CPU, by implementation (issue #15: the demo's time on 2 cores).

    python bench/optimizer_step.py [--shape minilm|base] [--threads 2] [--rounds 10] [--warmup 2] [--json out.json]

The parameters of a sequence classifier of the offline default's shape (6 x 384, vocab 30522: 22.7M) or
BERT-Base's (110M), with random gradients, stepped by torch.optim.AdamW three ways:
  foreach   the multi-tensor path (what the training loop used on CPU until session 20)
  fused     one fused kernel per parameter (`fused=True`; `pruneofa.train.performance.adamw` on CPU and CUDA)
  for-loop  one parameter at a time (`foreach=False`)
Rounds interleave the three in a new random order each (`pruneofa.bench.timing.interleaved`); medians after
warm-up, and each median's ratio to fused.
"""

from __future__ import annotations

import argparse
import random
import statistics

import torch
from transformers import BertConfig, BertForSequenceClassification

from pruneofa.bench.timing import add_round_options, interleaved, report_result

SHAPES = {"minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
          "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)}
VARIANTS = {"foreach": {"foreach": True}, "fused": {"fused": True}, "for-loop": {"foreach": False}}


def optimizer_with_gradients(shape: str, options: dict) -> torch.optim.AdamW:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=30522, num_labels=2, **SHAPES[shape]))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **options)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="minilm")
    add_round_options(parser, threads=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    optimizers = {name: optimizer_with_gradients(args.shape, options) for name, options in VARIANTS.items()}
    n_params = sum(p.numel() for group in optimizers["fused"].param_groups for p in group["params"])
    times = interleaved({name: opt.step for name, opt in optimizers.items()}, args.rounds, args.warmup,
                        random.Random(0))
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    result = {"shape": args.shape, "parameters": n_params, "threads": args.threads, "rounds": args.rounds,
              "median_ms": ms, "vs_fused": {name: ms[name] / ms["fused"] for name in ms}}
    print(f"AdamW step over {n_params / 1e6:.1f}M parameters ({args.shape}), {args.threads} thread(s), "
          f"medians of {args.rounds} interleaved rounds")
    print("| implementation | ms per step | vs fused |\n|---|---:|---:|")
    for name in VARIANTS:
        print(f"| {name} | {ms[name]:.1f} | {result['vs_fused'][name]:.2f}x |")
    return report_result(result, args.json, print_json=False)


if __name__ == "__main__":
    main()
