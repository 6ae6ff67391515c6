"""What the demo's prune step costs with torch's CPU dropout vs masks drawn packed (`train.cpu_dropout`).

    python bench/dropout_step_cost.py [--batch-size 16] [--seq-len 128] [--steps 8] [--warmup 2] [--json out.json]

The step is the demo's prune objective (`stages.lm.lm_objective`: KD on the masked tokens, the sentence term on
clean spans of 4-126 tokens, α 100), the frozen teacher's forwards included, then backward and a fused AdamW
update. Two students start from the offline default (MiniLM-L6 with an MLM head) in training mode; one keeps
torch's dropout (Bernoulli per element; SDPA's math path for attention dropout), the other runs
`pruneofa.train.cpu_dropout.use_packed_dropout`, as the training loop does on a CPU by default. Each round steps
both in a new random order (`pruneofa.bench.timing.interleaved`), so machine noise hits them alike; medians after
warm-up, and the median of the paired ratios.
"""

from __future__ import annotations

import statistics

import torch
from training_step import DEMO_DISTILL, offline_mlm_batch, step_arguments, time_objective_steps  # this folder
from transformers import AutoModelForMaskedLM

from pruneofa.bench.timing import report_result
from pruneofa.stages.lm import lm_objective
from pruneofa.train.cpu_dropout import use_packed_dropout


def main(argv: list[str] | None = None) -> dict:
    args = step_arguments(__doc__.splitlines()[0], batch_size=16, steps=8, warmup=2).parse_args(argv)
    path, batch = offline_mlm_batch(args.batch_size, args.seq_len)
    teacher = AutoModelForMaskedLM.from_pretrained(path).eval().requires_grad_(False)
    students = {name: AutoModelForMaskedLM.from_pretrained(path).train() for name in ("torch", "packed")}
    use_packed_dropout(students["packed"])
    settings = {name: (s, lm_objective(DEMO_DISTILL, causal=False)) for name, s in students.items()}
    times = time_objective_steps(settings, teacher, batch, args.steps, args.warmup)
    result = {
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "seq_len": args.seq_len,
        "steps": args.steps, "step_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()},
        "speedup_packed": statistics.median(a / b for a, b in zip(times["torch"], times["packed"])),
    }
    return report_result(result, args.json)


if __name__ == "__main__":
    main()
