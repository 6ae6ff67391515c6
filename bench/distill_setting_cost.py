"""What the demo's prune step costs under other `distill.*` settings, each against the demo's own.

    python bench/distill_setting_cost.py alpha_relation=0 [span_groups=1,alpha_sentence=0 ...]
        [--batch-size 16] [--seq-len 128] [--steps 8] [--warmup 2] [--json out.json]

Each positional argument is one setting: comma-separated `key=value` overrides (YAML values) of the demo's prune
objective as the shipped demo recipe sets it (`training_step.DEMO_DISTILL`), which is always timed too, as
`demo`; a list value keeps its commas (`span_tokens=[2,9]`). One student (the offline default, MiniLM-L6
with an MLM head, in training mode) steps under every setting: the objective with the frozen teacher's forwards,
backward and a fused AdamW update, every round in a new random order (`pruneofa.bench.timing.interleaved`), so
machine noise hits them alike; medians after warm-up, and the median of the paired ratios against `demo`.
"""

from __future__ import annotations

import re
import statistics

import torch
from training_step import DEMO_DISTILL, offline_mlm_batch, step_arguments, time_objective_steps  # this folder
from transformers import AutoModelForMaskedLM

from pruneofa.bench.timing import report_result
from pruneofa.config.loader import parse_overrides
from pruneofa.distill import DistillConfig
from pruneofa.errors import UserError
from pruneofa.stages.lm import lm_objective


def distill_setting(overrides: str) -> DistillConfig:
    """DEMO_DISTILL with `key=value,key=value` applied (validated: an unknown key is refused)."""
    items = [item for item in re.split(r",(?![^\[]*\])", overrides) if item]  # not the commas inside [...]
    return DistillConfig.model_validate({**DEMO_DISTILL.model_dump(), **parse_overrides(items)})


def main(argv: list[str] | None = None) -> dict:
    parser = step_arguments(__doc__.splitlines()[0], batch_size=16, steps=8, warmup=2)
    parser.add_argument("settings", nargs="+", help="comma-separated distill key=value overrides, one per setting")
    args = parser.parse_args(argv)
    configs = {"demo": DEMO_DISTILL}
    for setting in args.settings:  # before any model loads: a bad setting is one line and exit 2
        try:
            configs[setting] = distill_setting(setting)
        except (ValueError, UserError) as error:
            parser.error(f"setting {setting!r}: {' '.join(str(error).split())} (give distill key=value pairs)")
    path, batch = offline_mlm_batch(args.batch_size, args.seq_len)
    teacher = AutoModelForMaskedLM.from_pretrained(path).eval().requires_grad_(False)
    student = AutoModelForMaskedLM.from_pretrained(path).train()
    times = time_objective_steps({name: (student, lm_objective(c, causal=False)) for name, c in configs.items()},
                                 teacher, batch, args.steps, args.warmup)
    result = {
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "seq_len": args.seq_len,
        "steps": args.steps, "step_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()},
        "cost_over_demo": {name: statistics.median(a / b for a, b in zip(t, times["demo"]))
                           for name, t in times.items()},
    }
    return report_result(result, args.json)


if __name__ == "__main__":
    main()
