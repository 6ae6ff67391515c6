"""A newly created head trained alone first, on the frozen rest of the model.

A random head's gradients would otherwise flow into the pre-trained encoder and damage it before the
head is any good: the new LM head of teacher preparation, and the new task head of fine-tuning and
sparse transfer ("linear probing, then fine-tuning", Kumar et al. 2022). The stages decide when; this
module only runs the short phase.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pruneofa.sparsity.masks import plain_name
from pruneofa.train.loop import FitResult, TrainingJob, fit


def fit_new_head(job: TrainingJob, new_keys: list[str], steps: int, lr: float, what: str) -> FitResult:
    """Train only the tensors named in `new_keys` (those the checkpoint lacked), everything else
    frozen, for `steps` updates at peak rate `lr` (linear warm-up over the first 10%, then linear
    decay), with the job's own objective and teacher. Its checkpoints go to `output_dir/head`, so a
    resumed run skips the phase once done; the frozen parameters train again afterwards."""
    new = set(new_keys)
    frozen = [p for name, p in job.model.named_parameters() if plain_name(name) not in new and p.requires_grad]
    if len(frozen) == sum(p.requires_grad for p in job.model.parameters()):
        raise ValueError(f"none of {sorted(new)[:3]} is a parameter of the model")
    for p in frozen:
        p.requires_grad_(False)
    config = job.config.model_copy(update={"max_steps": steps, "lr": lr, "warmup_steps": steps // 10,
                                           "lr_schedule": "linear", "eval_every": 0, "save_every": 0})
    head_job = dataclasses.replace(job, config=config, output_dir=Path(job.output_dir) / "head", pruner=None,
                                   lr_at=lambda s: config.lr_at(s), description=f"{job.description}: {what}")
    try:
        return fit(head_job)
    finally:
        for p in frozen:
            p.requires_grad_(True)
