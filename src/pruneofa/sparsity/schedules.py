"""Schedules: *when* to prune and how fast to learn. Pure functions of the step, nothing else.

Steps count optimizer updates. `pruner.step(t)` is called after update t, so a mask computed
at step t is used from update t + 1 on.
"""

from __future__ import annotations


def cubic_sparsity(step: int, initial: float, final: float, begin: int, end: int) -> float:
    """Zhu & Gupta (2018) gradual pruning schedule.

        s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3,   t clipped to [t0, t1]

    with s_i = `initial`, s_f = `final`, t0 = `begin`, t1 = `end`. Sparsity rises fast while
    there are many redundant weights and slowly near the target: s(t0) = s_i, s(t1) = s_f,
    and at the midpoint s = s_f + (s_i - s_f) / 8.
    """
    if end <= begin:
        return final if step >= begin else initial
    progress = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def is_update_step(step: int, begin: int, stop: int, frequency: int) -> bool:
    """True where GMP recomputes masks: t in [t0, t_stop] with (t - t0) % Δ == 0.

    t_stop is the last pruning step (`pruning.stop_step`); masks stay frozen after it.
    """
    return begin <= step <= stop and (step - begin) % frequency == 0


def gmp_sparsity(step: int, initial: float, final: float, begin: int, end: int, stop: int, frequency: int) -> float:
    """Sparsity the masks *have* after step t: the cubic value at the last update step <= t.

        u(t) = t0 + Δ * floor((min(t, t_stop) - t0) / Δ)         for t >= t0
        s_gmp(t) = cubic_sparsity(u(t))                            (s_i before t0)

    Between updates the sparsity is a staircase under the cubic curve.
    """
    if step < begin:
        return initial
    last_update = begin + frequency * ((min(step, stop) - begin) // frequency)
    return cubic_sparsity(last_update, initial, final, begin, end)


def one_shot_sparsity(step: int, final: float, at_step: int) -> float:
    """All at once: s(t) = 0 for t < t0, s_f from t0 on."""
    return final if step >= at_step else 0.0


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
