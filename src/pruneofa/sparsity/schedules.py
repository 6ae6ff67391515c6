"""Sparsity schedules: *when* to prune. Pure functions of the step, nothing else
(the learning-rate schedules are beside the training loop, in `pruneofa.train.schedules`).

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
