"""Throughput and time left of a training run, for the progress bar and TensorBoard."""

from __future__ import annotations

import time


class Throughput:
    """Tokens per second and the estimated time to `max_steps`, averaged over this run's updates so far.

    A resumed run measures from its own first update (the time before the interruption is unknown);
    evaluations and checkpoints fall inside the average, so the estimate includes their share.
    """

    def __init__(self, start_step: int, max_steps: int, tokens: int):
        self.start_step, self.max_steps, self.start_tokens = start_step, max_steps, tokens
        self.started = time.perf_counter()

    def measure(self, step: int, tokens: int) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        done = max(step - self.start_step, 1)
        return {"tokens_per_s": (tokens - self.start_tokens) / elapsed,
                "eta_minutes": (self.max_steps - step) * elapsed / done / 60}
