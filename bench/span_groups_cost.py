"""What the demo's prune step costs with its spans in one padded batch vs in groups of similar length.

    python bench/span_groups_cost.py [--batch-size 16] [--seq-len 128] [--steps 8] [--warmup 2] [--groups 1 4]
                                     [--json out.json]

The step is the demo's prune objective (`stages.lm.lm_objective`: KD on the masked tokens, the sentence term
on clean spans of 4-126 tokens, α 100), the frozen teacher's forwards included, then backward and a fused
AdamW update; the student is the offline default (MiniLM-L6 with an MLM head) in training mode, so its
attention dropout runs. The settings differ only in `distill.span_groups`, the number of forwards the spans
go through: 1 pads every span to the longest of the batch, 4 (the default) pads each group to its own.
The spans are the same in both (a function of the batch). Each round steps every setting once in a new random
order (`pruneofa.bench.timing.interleaved`), so machine noise hits them alike; medians after warm-up, and the
median of the paired ratios.
"""

from __future__ import annotations

import statistics

import torch
from training_step import DEMO_DISTILL, offline_mlm_batch, step_arguments, time_objective_steps  # this folder
from transformers import AutoModelForMaskedLM

from pruneofa.bench.timing import report_result
from pruneofa.stages.lm import lm_objective


def main(argv: list[str] | None = None) -> dict:
    parser = step_arguments(__doc__.splitlines()[0], batch_size=16, steps=8, warmup=2)
    parser.add_argument("--groups", type=int, nargs="+", default=[1, DEMO_DISTILL.span_groups])
    args = parser.parse_args(argv)
    path, batch = offline_mlm_batch(args.batch_size, args.seq_len)
    teacher = AutoModelForMaskedLM.from_pretrained(path).eval().requires_grad_(False)
    student = AutoModelForMaskedLM.from_pretrained(path).train()
    settings = {g: (student, lm_objective(DEMO_DISTILL.model_copy(update={"span_groups": g}), causal=False))
                for g in args.groups}
    times = time_objective_steps(settings, teacher, batch, args.steps, args.warmup)
    first = args.groups[0]
    result = {
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "seq_len": args.seq_len,
        "steps": args.steps, "step_ms": {str(g): 1e3 * statistics.median(t) for g, t in times.items()},
        "speedup_over_first": {str(g): statistics.median(a / b for a, b in zip(times[first], t))
                               for g, t in times.items()},
    }
    return report_result(result, args.json)


if __name__ == "__main__":
    main()
