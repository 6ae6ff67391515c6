"""What a student-pruning step costs with KD on every token (the paper) vs on the masked tokens only.

    python bench/kd_positions_cost.py [--batch-size 16] [--seq-len 128] [--steps 10] [--json out.json]

The step is the prune stage's: the frozen teacher's forward, the student's forward, the fused
CE + KD over the MLM logits (`distill.token_distillation_loss`, logits built a chunk at a time
from the output layer), backward and an AdamW update. The two settings differ only in
`distill.kd_positions`; with `masked`, the output layer runs on the ~15% of tokens that carry a
CE target instead of all of them. Steps alternate between the two settings, so machine noise hits
both alike, and medians are taken after warm-up. The student and teacher are the offline default
(MiniLM-L6 with an MLM head; a 30,522-token vocabulary makes the output layer about half a
step's arithmetic at hidden 384).
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from transformers import AutoModelForMaskedLM
from train_overhead import offline_mlm_batch, step_arguments  # this folder: the same options and batch

from pruneofa.deferred_logits import forward_deferring_logits
from pruneofa.distill import DistillConfig, run_teacher, token_distillation_loss


def timed_step(student, teacher, optimizer, batch, config: DistillConfig) -> float:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    start = time.perf_counter()
    with torch.no_grad():
        _, teacher_logits = run_teacher(teacher, config, **inputs)
    _, student_logits = forward_deferring_logits(student, **inputs)
    loss = token_distillation_loss(student_logits, teacher_logits, batch["labels"], config, batch["attention_mask"])
    loss["loss"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    args = step_arguments(__doc__.splitlines()[0], batch_size=16, steps=10, warmup=2).parse_args()
    path, batch = offline_mlm_batch(args.batch_size, args.seq_len)
    teacher = AutoModelForMaskedLM.from_pretrained(path).eval()
    student = AutoModelForMaskedLM.from_pretrained(path).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    configs = {name: DistillConfig(kd_positions=name) for name in ("all", "masked")}

    times: dict[str, list[float]] = {name: [] for name in configs}
    for i in range(args.warmup + args.steps):
        for name, config in configs.items():
            elapsed = timed_step(student, teacher, optimizer, batch, config)
            if i >= args.warmup:
                times[name].append(elapsed)
    all_ms, masked_ms = (statistics.median(times[k]) * 1e3 for k in ("all", "masked"))
    ratios = sorted(a / m for a, m in zip(times["all"], times["masked"]))
    result = {
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "seq_len": args.seq_len,
        "steps": args.steps, "masked_fraction": float((batch["labels"] != -100).float().mean()),
        "step_ms_kd_all": all_ms, "step_ms_kd_masked": masked_ms,
        "speedup_median_pair": statistics.median(ratios),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
