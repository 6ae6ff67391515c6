"""Accuracy and speed of each sparsity pattern at an equal training budget (issue: speed from sparsity).

    .venv/bin/python studies/pattern_study.py            # after studies/transfer_study.py (reuses its teacher)
    .venv/bin/python studies/pattern_study.py --lm-teacher runs/offline/teacher --task-teacher runs/offline/rt-teacher

Every pattern prunes the same prepared MiniLM teacher with the same GMP + KD + LR-rewinding budget,
then transfers to Rotten Tomatoes with its zeros locked and KD from the same dense task teacher, with
the same budget; `pruneofa bench` then times the result (structured and hybrid after
`export --compact`, which removes the pruned heads and neurons). One pipeline, run by pruneofa's own
runner, so it resumes. Written to <output-dir>/patterns.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from transfer_study import prune_schedule, train_section  # this folder: the same budgets and GMP timing

from pruneofa.modeldir import inspect_dir
from pruneofa.pipeline.runner import PipelineRunner
from pruneofa.pipeline.schema import validate_pipeline

STRUCTURED = {"ffn_sparsity": 0.6667, "head_sparsity": 0.5}
PATTERNS = {  # name -> pruning overrides
    "unstructured-90": {"pattern": "unstructured", "target_sparsity": 0.9},
    "block4x4-90": {"pattern": "block:4x4", "target_sparsity": 0.9},
    "nm1of8": {"pattern": "nm:1:8", "target_sparsity": 0.875},
    "structured": {"pattern": "structured", "target_sparsity": 0.5, **STRUCTURED},
    "hybrid-90": {"pattern": "hybrid", "target_sparsity": 0.9, **STRUCTURED},
}
COMPACTED = ("structured", "hybrid-90")
ENGINES = "torch,torch-int8,dense-int8,sparse,sparse-int8"


def study_pipeline(args: argparse.Namespace) -> dict:
    prune_train = {**train_section(args.prune_steps, args.lm_batch), "warmup_steps": 1}
    task_train = train_section(args.task_steps, args.task_batch)
    steps: dict[str, dict] = {}
    for name in args.patterns:
        steps[f"prune-{name}"] = {"stage": "prune", "overrides": {
            "model": str(args.lm_teacher), "train": prune_train,
            "pruning": {**PATTERNS[name], **prune_schedule(args.prune_steps)}}}
        steps[f"rt-{name}"] = {"stage": "transfer", "overrides": {
            "model": f"${{prune-{name}}}", "teacher": str(args.task_teacher), "seed": args.seed, "train": task_train}}
        served = f"rt-{name}"
        if name in COMPACTED:
            steps[f"compact-{name}"] = {"stage": "export", "overrides": {
                "model": f"${{rt-{name}}}", "format": "hf", "compact": True}}
            served = f"compact-{name}"
        # a compacted model's own fp32 is already smaller: the masked model is timed beside it as the baseline
        baseline = {"baseline": f"${{rt-{name}}}"} if name in COMPACTED else {}
        steps[f"bench-{name}"] = {"stage": "bench", "overrides": {
            "model": f"${{{served}}}", "engines": ENGINES, "rounds": args.rounds, "warmup": 3,
            "measure_memory": False, **baseline}}
    return {"output_dir": str(args.output_dir), "steps": steps}


def summarize(out: Path, patterns: list[str]) -> dict:
    rows = {}
    for name in patterns:
        metrics = json.loads((out / f"rt-{name}" / "metrics.json").read_text())
        bench = json.loads((out / f"bench-{name}" / "bench.json").read_text())
        summary = bench["summary"]  # the best engine is the fastest whose outputs match fp32
        by_engine = {r["engine"]: r["median_ms"] for r in bench["rows"] if r["batch"] == summary["batch"]}
        rows[name] = {"pruning": PATTERNS[name], "test_accuracy": metrics["test/accuracy"],
                      "sparsity": inspect_dir(out / f"rt-{name}")["overall"], "latency_ms": by_engine,
                      "best_engine": summary["best_engine"], "best_ms": summary["best_ms"],
                      "dense_fp32_ms": summary["dense_fp32_ms"], "speedup": summary["best_speedup"],
                      "environment": bench["environment"]}
    return rows


def table(rows: dict) -> str:
    """Speed-ups are against dense fp32 PyTorch of the uncompacted shape in the same bench run (for a
    compacted model: its masked model, timed as the bench's baseline)."""
    lines = ["| pattern | test accuracy (%) | zeros in prunable layers | fastest engine | ms (b1 s128) | "
             "dense fp32 ms (same run) | x vs dense fp32 | accuracy points per ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {100 * r['test_accuracy']:.2f} | {100 * r['sparsity']:.1f}% | {r['best_engine']} | "
                     f"{r['best_ms']:.2f} | {r['dense_fp32_ms']:.2f} | {r['speedup']:.2f}x | "
                     f"{100 * r['test_accuracy'] / r['best_ms']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/pattern-study"))
    parser.add_argument("--lm-teacher", type=Path, default=Path("runs/transfer-study/teacher"))
    parser.add_argument("--task-teacher", type=Path, default=Path("runs/transfer-study/dense-s1"))
    parser.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=list(PATTERNS))
    parser.add_argument("--prune-steps", type=int, default=80)
    parser.add_argument("--lm-batch", type=int, default=8)
    parser.add_argument("--task-steps", type=int, default=160)
    parser.add_argument("--task-batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads while training")
    args = parser.parse_args()
    for path in (args.lm_teacher, args.task_teacher):
        if not (path / "config.json").is_file():
            raise SystemExit(f"{path} is not a model dir: run studies/transfer_study.py first or pass --lm-teacher/--task-teacher")
    if args.threads:
        torch.set_num_threads(args.threads)
    PipelineRunner(validate_pipeline(study_pipeline(args)), Path(__file__)).run()
    rows = summarize(args.output_dir, args.patterns)
    md = table(rows)
    (args.output_dir / "patterns.md").write_text(md + "\n")
    (args.output_dir / "patterns.json").write_text(json.dumps(
        {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "rows": rows}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
