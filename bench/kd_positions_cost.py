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

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

from pruneofa.data.assets import asset_path
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    path = asset_path("offline/minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForMaskedLM.from_pretrained(path).eval()
    student = AutoModelForMaskedLM.from_pretrained(path).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    ids = torch.randint(1000, 29000, (args.batch_size, args.seq_len))
    batch = dict(collate([{"input_ids": row} for row in ids]))
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
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
