"""What a student-pruning step costs with KD on every token (the paper) vs on the masked tokens only.

    python bench/kd_positions_cost.py [--batch-size 16] [--seq-len 128] [--steps 10] [--warmup 2] [--json out.json]

The step is the prune stage's objective (`stages.lm.lm_objective`: the frozen teacher's forward, the student's,
the fused CE + KD over the MLM logits, built a chunk at a time from the output layer), then backward and a fused
AdamW update. The two settings differ only in `distill.kd_positions`; with `masked`, the output layer runs on
the ~15% of tokens that carry a CE target instead of all of them. One student (the offline default, MiniLM-L6
with an MLM head, in training mode) is stepped under both, every round in a new random order
(`pruneofa.bench.timing.interleaved`); medians after warm-up, and the median of the paired ratios. A
30,522-token vocabulary makes the output layer about half a step's arithmetic at hidden 384.
(Sessions 1-21 timed this with torch's unfused AdamW, the two settings in a fixed order.)
"""

from __future__ import annotations

import statistics

import torch
from training_step import offline_mlm_batch, step_arguments, time_objective_steps  # this folder
from transformers import AutoModelForMaskedLM

from pruneofa.bench.timing import report_result
from pruneofa.distill import DistillConfig
from pruneofa.stages.lm import lm_objective


def main(argv: list[str] | None = None) -> dict:
    args = step_arguments(__doc__.splitlines()[0], batch_size=16, steps=10, warmup=2).parse_args(argv)
    path, batch = offline_mlm_batch(args.batch_size, args.seq_len)
    teacher = AutoModelForMaskedLM.from_pretrained(path).eval().requires_grad_(False)
    student = AutoModelForMaskedLM.from_pretrained(path).train()
    settings = {name: (student, lm_objective(DistillConfig(kd_positions=name), causal=False))
                for name in ("all", "masked")}
    times = time_objective_steps(settings, teacher, batch, args.steps, args.warmup)
    result = {
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "seq_len": args.seq_len,
        "steps": args.steps, "masked_fraction": float((batch["labels"] != -100).float().mean()),
        "step_ms_kd_all": 1e3 * statistics.median(times["all"]),
        "step_ms_kd_masked": 1e3 * statistics.median(times["masked"]),
        "speedup_median_pair": statistics.median(a / m for a, m in zip(times["all"], times["masked"])),
    }
    return report_result(result, args.json)


if __name__ == "__main__":
    main()
