"""The data order: a pure function of (seed, step), optionally grouped by length."""

import numpy as np
import pytest

from pruneofa.train.sampling import batch_indices, rank_indices

N, B, SEED = 203, 8, 7  # 25 batches an epoch, 3 examples skipped
LENGTHS = np.random.default_rng(0).integers(3, 90, size=N).tolist()


def epoch(first_step: int, **grouping) -> list[list[int]]:
    return [batch_indices(s, N, B, SEED, **grouping) for s in range(first_step, first_step + N // B)]


def padded_tokens(batches: list[list[int]]) -> int:
    return sum(max(LENGTHS[i] for i in b) * len(b) for b in batches)


def test_an_epoch_visits_distinct_examples_and_the_next_epoch_reshuffles():
    first, second = epoch(1), epoch(1 + N // B)
    assert all(len(b) == B for b in first)
    flat = [i for b in first for i in b]
    assert len(set(flat)) == len(flat) == (N // B) * B
    assert first != second and batch_indices(3, N, B, SEED) == first[2]  # a pure function of the step


@pytest.mark.parametrize("group", [2, 4, 16])
def test_grouping_by_length_keeps_each_group_of_examples_and_sorts_inside_it(group):
    plain, grouped = epoch(1), epoch(1, lengths=LENGTHS, group_batches=group)
    for start in range(0, N // B, group):  # the same examples per group of batches, each once
        assert sorted(i for b in grouped[start:start + group] for i in b) == \
            sorted(i for b in plain[start:start + group] for i in b)
        ranges = sorted((min(LENGTHS[i] for i in b), max(LENGTHS[i] for i in b)) for b in grouped[start:start + group])
        assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:]))  # batches cut from one sorted run
    assert padded_tokens(grouped) < padded_tokens(plain)
    assert grouped == epoch(1, lengths=LENGTHS, group_batches=group)


def test_grouped_batches_are_visited_in_a_shuffled_order():
    grouped = epoch(1, lengths=LENGTHS, group_batches=16)
    longest = [max(LENGTHS[i] for i in b) for b in grouped[:16]]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_ranks_split_a_grouped_batch_into_disjoint_slices():
    for step in (1, 5, 26):
        whole = batch_indices(step, N, B, SEED, LENGTHS, 4)
        parts = [rank_indices(step, N, B, SEED, r, 2, LENGTHS, 4) for r in range(2)]
        assert parts[0] + parts[1] == whole
