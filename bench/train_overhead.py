"""What masking costs a training step: student pruning vs the same training without masks.

    python bench/train_overhead.py [--batch-size 8] [--seq-len 128] [--steps 20] [--json out.json]
        [--criterion magnitude|wanda] [--reconstruct] [--calibration-steps N]

Both students are the offline default model (MiniLM-L6 with an MLM head). Each timed step is
forward + backward + AdamW update (+ `pruner.step` for the masked one, on an update step every
`--frequency` steps as in a real run); the teacher forward is excluded from both. Steps alternate
between the two models, so machine noise hits both alike, and medians are taken after warm-up.
Also timed: one GMP mask update over all 36 prunable matrices (for wanda after one training-mode
forward, so that it has inputs to score from and, with `--reconstruct`, X^T X to update from).
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from training_step import offline_mlm_batch, step_arguments  # this folder: the same options and batch
from transformers import AutoModelForMaskedLM

from pruneofa import Pruner


def timed_step(model, optimizer, batch, after=None) -> float:
    start = time.perf_counter()
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if after:
        after()
    return time.perf_counter() - start


def main() -> None:
    parser = step_arguments(__doc__.splitlines()[0], batch_size=8, steps=20, warmup=3)
    parser.add_argument("--frequency", type=int, default=20, help="GMP update every N steps (paper: 1000)")
    parser.add_argument("--criterion", default="magnitude", choices=["magnitude", "wanda"])
    parser.add_argument("--reconstruct", action="store_true", help="wanda: SparseGPT's update at each mask update")
    parser.add_argument("--calibration-steps", type=int, help="wanda: count inputs only this many steps before updates")
    args = parser.parse_args()
    path, batch = offline_mlm_batch(args.batch_size, args.seq_len)
    plain = AutoModelForMaskedLM.from_pretrained(path).train()
    masked = AutoModelForMaskedLM.from_pretrained(path).train()
    pruner = Pruner(masked, target_sparsity=0.85, target_step=10 * args.frequency, frequency=args.frequency,
                    criterion=args.criterion, reconstruct=args.reconstruct, calibration_steps=args.calibration_steps)
    pruner.update_masks(0.5)
    opts = {m: torch.optim.AdamW(m.parameters(), lr=1e-5) for m in (plain, masked)}

    times = {"plain": [], "masked": []}
    step = 0
    for i in range(args.warmup + args.steps):
        step += 1
        t_plain = timed_step(plain, opts[plain], batch)
        t_masked = timed_step(masked, opts[masked], batch, after=lambda: pruner.step(step))
        if i >= args.warmup:
            times["plain"].append(t_plain)
            times["masked"].append(t_masked)
    update = []
    for sparsity in (0.6, 0.65, 0.7, 0.75, 0.8):  # each update prunes more, as GMP's before its target do
        if pruner.criterion is not None:
            pruner.criterion.observe_inputs(True)  # outside calibration_steps' window the hooks would not count
        with torch.no_grad():
            masked(**batch)  # wanda's inputs for this update (the training-mode forward of a step)
        start = time.perf_counter()
        pruner.update_masks(sparsity)
        update.append(time.perf_counter() - start)

    plain_ms, masked_ms = (statistics.median(times[k]) * 1e3 for k in ("plain", "masked"))
    update_ms = statistics.median(update) * 1e3
    ratios = sorted(m / p for m, p in zip(times["masked"], times["plain"]))
    result = {
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "seq_len": args.seq_len,
        "steps": args.steps, "criterion": args.criterion, "reconstruct": args.reconstruct,
        "calibration_steps": args.calibration_steps, "plain_step_ms": plain_ms, "masked_step_ms": masked_ms,
        "overhead_median_pair": statistics.median(ratios) - 1, "overhead_mean": statistics.mean(ratios) - 1,
        "mask_update_ms": update_ms,
        "mask_update_per_step_at_frequency": update_ms / args.frequency / plain_ms,
    }
    print(f"threads={result['threads']} batch={args.batch_size} seq={args.seq_len} steps={args.steps} "
          f"criterion={args.criterion} reconstruct={args.reconstruct} calibration_steps={args.calibration_steps} (medians)")
    print("| | ms |\n|---|---|")
    print(f"| training step, no masks | {plain_ms:.0f} |\n| training step, masks + pruner.step | {masked_ms:.0f} |")
    print(f"| one GMP mask update (36 matrices) | {update_ms:.0f} |")
    print(f"masking overhead: {result['overhead_median_pair']:+.1%} of a step (median of paired ratios; mean "
          f"{result['overhead_mean']:+.1%}, which counts the steps that observe for calibration_steps); "
          f"mask update amortised over {args.frequency} steps: {result['mask_update_per_step_at_frequency']:.2%}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
