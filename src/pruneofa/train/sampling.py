"""Which examples make the global batch of each update: a pure function of (seed, step)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _epoch_order(epoch: int, n_examples: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_examples, generator=generator)


def batch_indices(step: int, n_examples: int, batch_size: int, seed: int,
                  lengths: Sequence[int] | None = None, group_batches: int = 16) -> list[int]:
    """Example indices of the global batch for update `step` (1-based).

        epoch e = (step - 1) // (n // B),  position j = (step - 1) % (n // B)
        batch   = perm_e[j·B : (j+1)·B]     with perm_e a permutation of range(n) seeded by (seed, e)

    Each epoch visits every example at most once (the last n mod B are skipped that epoch). Being a
    function of the step alone, it needs no state to resume and is identical on every process.

    With `lengths` (tokens per example) the batches are grouped by length: perm_e is cut into groups of
    G = `group_batches` batches, each group is sorted by length and cut into its G batches, and the group's
    batches are visited in a seeded random order. An epoch still visits the same examples, each group holds
    the same G·B examples as without grouping, and a batch pads to the longest of examples of similar length
    (Rotten Tomatoes at G = 16: 1.07x the real tokens instead of 1.93x). HF's `group_by_length` does the same
    with "megabatches" of 50 batches.
    """
    per_epoch = n_examples // batch_size
    epoch, position = divmod(step - 1, per_epoch)
    order = _epoch_order(epoch, n_examples, seed)
    if lengths is None:
        return order[position * batch_size : (position + 1) * batch_size].tolist()
    group, within = divmod(position, group_batches)
    span = group_batches * batch_size
    members = order[: per_epoch * batch_size][group * span : (group + 1) * span].numpy()
    members = members[np.argsort(np.asarray(lengths)[members], kind="stable")]
    visit = torch.randperm(len(members) // batch_size,
                           generator=torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 10_007 + group))
    first = int(visit[within]) * batch_size
    return members[first : first + batch_size].tolist()


def rank_indices(step: int, n_examples: int, batch_size: int, seed: int, rank: int, world: int,
                 lengths: Sequence[int] | None = None, group_batches: int = 16) -> list[int]:
    """Process `rank`'s share of update `step`'s global batch: the rank-th of `world` equal, disjoint slices.

    Each process reads only these examples (for a corpus on disk: only these rows of the file).
    """
    share = batch_size // world
    return batch_indices(step, n_examples, batch_size, seed, lengths, group_batches)[rank * share : (rank + 1) * share]
