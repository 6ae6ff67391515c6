"""Learning-rate schedules of the training loop. Pure functions of the step, nothing else.

Steps count optimizer updates (0-based); `TrainConfig.lr_at` picks one by `train.lr_schedule`.
"""

from __future__ import annotations


def linear_warmup_decay(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warmup then linear decay to zero (BERT's and HF's default schedule).

        lr(t) = peak * t / w                       for t < w
        lr(t) = peak * (T - t) / (T - w)           for w <= t <= T, and 0 after T
    """
    if step < warmup:
        return peak * step / warmup
    if step >= total:
        return 0.0
    return peak * (total - step) / max(total - warmup, 1)


def rewinding_lr(step: int, peak: float, warmup: int, hold_until: int, total: int) -> float:
    """Learning-rate rewinding (Renda et al. 2020) as Prune OFA runs it.

        lr(t) = peak * t / w                       for t < w                (warmup)
        lr(t) = peak                               for w <= t < t_hold      (pruning window)
        lr(t) = peak * (T - t) / (T - t_hold)      for t_hold <= t <= T     (decay to 0)

    `hold_until` is the end of the pruning window (the step the target sparsity is reached):
    the pruned network keeps training at the full rate while it loses weights, and only then anneals.
    """
    if step < warmup:
        return peak * step / warmup
    hold_until = max(hold_until, warmup)
    if step < hold_until:
        return peak
    if step >= total:
        return 0.0
    return peak * (total - step) / max(total - hold_until, 1)


def constant_lr(step: int, peak: float, warmup: int) -> float:
    """Linear warmup then constant: lr(t) = peak * min(1, t / w)."""
    return peak * min(1.0, step / warmup) if warmup > 0 else peak
