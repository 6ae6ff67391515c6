"""Which examples make the global batch of each update: a pure function of (seed, step)."""

from __future__ import annotations

import torch


def batch_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """Example indices of the global batch for update `step` (1-based).

        epoch e = (step - 1) // (n // B),  position j = (step - 1) % (n // B)
        batch   = perm_e[j·B : (j+1)·B]     with perm_e a permutation of range(n) seeded by (seed, e)

    Each epoch visits every example at most once (the last n mod B are skipped that epoch). Being a
    function of the step alone, it needs no state to resume and is identical on every process.
    """
    per_epoch = n_examples // batch_size
    epoch, position = divmod(step - 1, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=generator)
    return order[position * batch_size : (position + 1) * batch_size].tolist()


def rank_indices(step: int, n_examples: int, batch_size: int, seed: int, rank: int, world: int) -> list[int]:
    """Process `rank`'s share of update `step`'s global batch: the rank-th of `world` equal, disjoint slices.

    Each process reads only these examples (for a corpus on disk: only these rows of the file).
    """
    share = batch_size // world
    return batch_indices(step, n_examples, batch_size, seed)[rank * share : (rank + 1) * share]
