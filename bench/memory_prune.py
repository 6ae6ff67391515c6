"""Peak memory of student pruning vs plain training of the same model with the teacher run alongside.

    .venv/bin/python bench/memory_prune.py [--batch-size 16] [--seq-len 128] [--steps 20] [--logits-path] [--json out.json]

Both runs are the offline default model (`offline/minilm-l6`, the bare MiniLM-L6 encoder, given an
MLM head as the stages do), trained by the project's own loop (`pruneofa.train.loop.fit`) on the
offline corpus, each in a fresh subprocess:

  prune   `pruneofa prune` itself (run_lm_stage): GMP to 85% (masks updated every 2 steps, the
          target reached half-way) + KD from the frozen teacher (alpha_ce = alpha_kd = 0.5, T = 2),
          the loss from `stages.lm.lm_objective`: both models run without their output layer and
          CE + KD are computed from its input a chunk of tokens at a time
  dense   the same model, data, optimizer and loop with no masks and KD off, but the teacher still
          loaded and run on every batch (its output discarded), so the two differ only by what
          pruning and distillation themselves add; the student's loss is transformers' own
  logits  (--logits-path) masks + KD as `prune`, but through the public
          `distillation_loss(..., labels=...)` on both models' full logits: what a plain training
          loop using the library gets (the chunked loss without the skipped output layers)

Peak RSS is the subprocess's ru_maxrss from os.wait4 (the whole process: Python, torch, both
models, optimizer, activations); the final checkpoint and model writes are included in both.
Prints a table and writes JSON (--json, default bench/results/memory_prune.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "offline/minilm-l6"


def recipe_overrides(args: argparse.Namespace, out: Path) -> list[str]:
    steps = args.steps
    return [f"model={MODEL}", f"output_dir={out}", f"train.max_steps={steps}", f"train.batch_size={args.batch_size}",
            f"train.seq_len={args.seq_len}", "train.warmup_steps=0", "train.save_every=0", "train.eval_every=0",
            "train.eval_batches=1", f"train.log_every={steps}", "train.lr_schedule=rewind",
            f"pruning.target_step={max(2, steps // 2)}", f"pruning.stop_step={max(2, steps // 2)}",
            "pruning.frequency=2", "pruning.target_sparsity=0.85", "distill.alpha_ce=0.5", "distill.alpha_kd=0.5",
            "distill.temperature=2.0"]


def child_prune(overrides: list[str]) -> None:
    from pruneofa.config.loader import parse_overrides
    from pruneofa.stages.lm import run_lm_stage
    from pruneofa.stages.registry import load_recipe

    run_lm_stage(load_recipe("prune", "offline", parse_overrides(overrides)))


def child_custom(overrides: list[str], variant: str) -> None:
    """run_lm_stage's setup and loop with another objective: `dense` (no masks, teacher run, KD off)
    or `logits` (masks + KD as the stage, through distillation_loss on full logits)."""
    import torch

    from pruneofa.config.loader import parse_overrides
    from pruneofa.distill import distillation_loss
    from pruneofa.data.block_cache import prepare_blocks
    from pruneofa.models import is_causal_lm, load_lm, load_tokenizer
    from pruneofa.sparsity.pruner import Pruner
    from pruneofa.stages.lm import _batch, _collator, lm_evaluator
    from pruneofa.stages.output import claim_output_dir, write_model_dir
    from pruneofa.stages.registry import load_recipe
    from pruneofa.train.loop import TrainingJob, fit

    recipe = load_recipe("prune", "offline", parse_overrides(overrides))
    model = load_lm(recipe.model)
    tokenizer = load_tokenizer(recipe.model)
    teacher = load_lm(recipe.model)
    causal = is_causal_lm(model.config)
    pruner = Pruner(model, recipe.pruning) if variant == "logits" else None
    cache = prepare_blocks(recipe.data, tokenizer, recipe.train.seq_len)
    train_blocks, val_blocks = cache.train, cache.validation
    out = claim_output_dir(recipe)
    collator = _collator(tokenizer, causal, recipe.train.mlm_probability)

    def dense_loss(student, frozen_teacher, batch):
        out_s = student(**batch)
        with torch.no_grad():
            out_t = frozen_teacher(**{k: v for k, v in batch.items() if k != "labels"})
        del out_t  # run, not used: KD off
        return {"loss": out_s.loss, "ce": out_s.loss.detach()}

    def logits_loss(student, frozen_teacher, batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out_s = student(**inputs)
        with torch.no_grad():
            out_t = frozen_teacher(**inputs)
        return distillation_loss(out_s, out_t, recipe.distill, batch["attention_mask"], labels=batch["labels"],
                                 causal=causal)

    job = TrainingJob(
        model=model, n_examples=len(train_blocks), make_batch=lambda idx: _batch(collator, train_blocks, idx),
        compute_loss=dense_loss if variant == "dense" else logits_loss,
        lr_at=lambda s: recipe.train.lr_at(s, recipe.pruning.target_step), config=recipe.train, output_dir=out,
        seed=recipe.seed, teacher=teacher, pruner=pruner, evaluate=lm_evaluator(tokenizer, causal, recipe, val_blocks),
        description=variant)
    result = fit(job)
    if pruner is not None:
        pruner.finalize()
    write_model_dir(model, tokenizer, out, "prune", recipe, {"step": result.step})


def measure(mode: str, args: argparse.Namespace, workdir: Path) -> dict:
    out = workdir / mode
    cmd = [sys.executable, __file__, "--child", mode, "--", *recipe_overrides(args, out)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    log = workdir / f"{mode}.log"
    start = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{mode} run failed (exit {code}):\n{log.read_text()[-3000:]}")
    row = {"mode": mode, "peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": time.perf_counter() - start,
           "cpu_s": usage.ru_utime + usage.ru_stime}
    if mode != "dense":
        from pruneofa.modeldir import inspect_dir

        row["final_sparsity"] = inspect_dir(out)["overall"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the runs (0: torch's default)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "memory_prune.json"))
    parser.add_argument("--logits-path", action="store_true",
                        help="also measure pruning + KD through distillation_loss on full logits")
    parser.add_argument("--child", choices=["prune", "dense", "logits"], help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "prune":
            child_prune(args.overrides)
        else:
            child_custom(args.overrides, args.child)
        return

    modes = ("dense", "prune", "logits") if args.logits_path else ("dense", "prune")
    with tempfile.TemporaryDirectory(prefix="memory_prune-") as tmp:
        rows = [measure(mode, args, Path(tmp)) for mode in modes]
    dense, prune = rows[0], rows[1]
    for row in rows:
        row["ratio_to_dense"] = row["peak_rss_mib"] / dense["peak_rss_mib"]
    ratio = prune["ratio_to_dense"]
    print(f"MiniLM-L6 ({MODEL}) + MLM head, batch {args.batch_size} x seq {args.seq_len}, {args.steps} steps each\n")
    print("| run | peak RSS (MiB) | x dense | wall (s) | CPU (s) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    labels = {"dense": "dense training + teacher forward (no masks, KD off)",
              "prune": "`pruneofa prune`: GMP 85% + KD (lm_objective, output layers skipped)",
              "logits": "GMP 85% + KD via distillation_loss on full logits"}
    for row in rows:
        print(f"| {labels[row['mode']]} | {row['peak_rss_mib']:.0f} | {row['ratio_to_dense']:.2f} | "
              f"{row['wall_s']:.0f} | {row['cpu_s']:.0f} |")
    print(f"\nratio prune / dense: {ratio:.3f}x (target <= 1.15x); final sparsity {prune['final_sparsity']:.3f}")
    result = {"model": MODEL, "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps,
              "threads": args.threads or None, "rows": rows, "ratio": ratio, "target": 1.15,
              "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    from pruneofa.fileio import atomic_write_text  # here: this parent imports no pruneofa (torch) up front

    atomic_write_text(path, json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
