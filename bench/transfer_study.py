"""The paper's transfer comparison on the offline default, at CPU scale (issue: sparse transfer learning).

    .venv/bin/python bench/transfer_study.py                          # 2 seeds, ~2.5 CPU-hours
    .venv/bin/python bench/transfer_study.py --seeds 1 2 3 --task-steps 150
    .venv/bin/python bench/transfer_study.py --smoke                  # a few steps of everything, to check the wiring

Pre-training once: teacher preparation of MiniLM-L6 on the Wikipedia summaries, then student pruning
to 85% and to 90% (GMP + KD + LR rewinding). Then, for every seed, on Rotten Tomatoes with the same
step budget:
  dense        the teacher fine-tuned densely (also the KD teacher of the runs below)
  ofa-85/90    Prune OFA: the sparse pre-trained student, zeros locked, KD from the dense task model
  nokd-85/90   the same without KD (distill.alpha_kd=0)
  ds-85/90     downstream-only pruning: the dense pre-trained teacher pruned with GMP + KD while
               fine-tuning (the paper's Table 3 baseline), reaching the target at 2/3 of the budget

It is one pipeline recipe run by pruneofa's own runner, so an interrupted study resumes where it
stopped. The table gives test accuracy mean ± half the range over seeds, and the sparsity that
`pruneofa inspect` reads from each saved model; it is written to <output-dir>/study.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from pruneofa.inspect import inspect_dir
from pruneofa.pipeline.runner import PipelineRunner
from pruneofa.pipeline.schema import validate_pipeline

SPARSITIES = (85, 90)


def train_section(steps: int, batch: int) -> dict:
    """A stage's `train` overrides for a budget of `steps` x `batch`: 10% warm-up, a checkpoint half-way."""
    return {"max_steps": steps, "batch_size": batch, "warmup_steps": max(1, steps // 10),
            "save_every": max(1, steps // 2), "eval_every": 0, "log_every": max(1, steps // 20)}


def prune_schedule(steps: int) -> dict:
    """The paper's GMP timing scaled to `steps`: target at 1/2, masks frozen from 4/5, 20 updates."""
    return {"target_step": steps // 2, "stop_step": (4 * steps) // 5, "frequency": max(1, steps // 20)}


def study_pipeline(args: argparse.Namespace) -> dict:
    task_train = train_section(args.task_steps, args.task_batch)
    # an empty `data: {}` would replace the recipe's whole data section, so it is left out
    task_data = {"data": {"max_eval_samples": args.max_eval_samples}} if args.max_eval_samples else {}
    steps: dict[str, dict] = {
        "teacher": {"stage": "teacher", "overrides": {"model": "offline/minilm-l6",
                                                      "train": train_section(args.teacher_steps, args.lm_batch)}},
    }
    for s in SPARSITIES:
        steps[f"prune-{s}"] = {"stage": "prune", "overrides": {
            "model": "${teacher}", "train": {**train_section(args.prune_steps, args.lm_batch), "warmup_steps": 1},
            "pruning": {"target_sparsity": s / 100, **prune_schedule(args.prune_steps)}}}
    for seed in args.seeds:
        common = {"seed": seed, "train": task_train, **task_data}
        steps[f"dense-s{seed}"] = {"stage": "finetune", "overrides": {"model": "${teacher}", **common}}
        for s in SPARSITIES:
            steps[f"ofa-{s}-s{seed}"] = {"stage": "transfer", "overrides": {
                "model": f"${{prune-{s}}}", "teacher": f"${{dense-s{seed}}}", **common}}
            steps[f"nokd-{s}-s{seed}"] = {"stage": "transfer", "recipe": "no-kd", "overrides": {
                "model": f"${{prune-{s}}}", **common}}
            steps[f"ds-{s}-s{seed}"] = {"stage": "transfer", "recipe": "downstream-pruning", "overrides": {
                "model": "${teacher}", "teacher": f"${{dense-s{seed}}}", **common,
                "pruning": {"target_sparsity": s / 100, "target_step": (2 * args.task_steps) // 3,
                            "frequency": max(1, args.task_steps // 30)}}}
    return {"output_dir": str(args.output_dir), "steps": steps}


def summarize(out: Path, seeds: list[int]) -> dict:
    rows = {}
    methods = [("dense", "dense fine-tuned", None)] + [
        (f"{kind}-{s}", label.format(s=s), s) for s in SPARSITIES
        for kind, label in (("ofa", "Prune OFA {s}% + KD"), ("nokd", "Prune OFA {s}%, no KD"),
                            ("ds", "downstream-only pruning {s}% + KD"))]
    for key, label, target in methods:
        accs, sparsities = [], []
        for seed in seeds:
            run = out / f"{key}-s{seed}"
            metrics = json.loads((run / "metrics.json").read_text())
            accs.append(metrics["test/accuracy"])
            sparsities.append(inspect_dir(run)["overall"])
        rows[key] = {"label": label, "target": target, "test_accuracy": accs, "mean": statistics.mean(accs),
                     "spread": (max(accs) - min(accs)) / 2, "sparsity": sparsities}
    dense = rows["dense"]["mean"]
    for row in rows.values():
        row["vs_dense"] = row["mean"] / dense
    return rows


def table(rows: dict, seeds: list[int]) -> str:
    lines = [f"| model | test accuracy (%), mean ± half-range over seeds {seeds} | of dense | sparsity (inspect) |",
             "|---|---|---|---|"]
    for row in rows.values():
        sp = ", ".join(f"{100 * x:.1f}%" for x in sorted(set(round(v, 4) for v in row["sparsity"])))
        lines.append(f"| {row['label']} | {100 * row['mean']:.2f} ± {100 * row['spread']:.2f} | "
                     f"{100 * row['vs_dense']:.1f}% | {sp} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/transfer-study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--teacher-steps", type=int, default=100)
    parser.add_argument("--prune-steps", type=int, default=120)
    parser.add_argument("--lm-batch", type=int, default=16)
    parser.add_argument("--task-steps", type=int, default=100)
    parser.add_argument("--task-batch", type=int, default=32)
    parser.add_argument("--max-eval-samples", type=int, default=None, help="cap each eval split (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 shares a busy machine best)")
    parser.add_argument("--smoke", action="store_true", help="a few steps of everything, to check the wiring")
    args = parser.parse_args()
    if args.smoke:
        args.teacher_steps, args.prune_steps, args.task_steps, args.lm_batch, args.task_batch = 2, 4, 3, 4, 8
        args.max_eval_samples = 16
    if args.threads:
        torch.set_num_threads(args.threads)
    pipeline = validate_pipeline(study_pipeline(args))
    state = PipelineRunner(pipeline, Path(__file__)).run()
    rows = summarize(args.output_dir, args.seeds)
    md = table(rows, args.seeds)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "study.md").write_text(md + "\n")
    (args.output_dir / "study.json").write_text(json.dumps(
        {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "rows": rows,
         "seconds": {n: r.get("seconds") for n, r in state["steps"].items()}}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
