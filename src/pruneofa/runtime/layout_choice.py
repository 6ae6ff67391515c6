"""The layout of each "sparse-int8" Linear (sparse quads or the dense int8 kernel) chosen by timing the whole model
on this machine at load, instead of reading `policy.py`'s break-even tables.

The tables were measured on three CPUs; another CPU, thread count or input length moves the sparsity at which
a layer's quads beat the dense kernel (AMX tiles double the dense side's speed). Timing each Linear alone would
be biased towards dense: called in a loop its weights stay in L1/L2, while in a model they stream from L3 or
DRAM on every call, which is where the smaller sparse stream gains (on the AMX Xeon the break-even was 0.88-0.92
per Linear, 0.83-0.87 in the whole encoder; docs/RESULTS.md). So the choice is made on whole forwards.

Layers are grouped by (in, out, sparsity to 2 decimals): GMP prunes every Linear of a model to one sparsity, so
a BERT-family model has 3-4 groups. With S = every candidate sparse:

    T(S), T(every candidate dense), and T(S with group g dense) for each group g,
    interleaved round by round after a warm-up, each the median over rounds;
    greedy = the groups g with T(S with g dense) < T(S);
    if greedy was not timed itself, it is timed against the fastest configuration so far;
    the answer is the fastest configuration timed            (a tie keeps the smaller, sparse weights)

G + 2 configurations (+ 2 in a second phase), not 2^G: the groups of one model interact through the caches and the
shared threads, which every whole-forward timing includes, and the second phase checks the one combination the
first did not time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from pruneofa.runtime.fused_encoder import fuse_encoders, unfuse_encoders
from pruneofa.runtime.layers import set_child

Group = Hashable
ALL_SPARSE, ALL_DENSE = "all sparse", "all dense"


@dataclass
class LayoutTiming:
    """What the load measured: the median seconds per forward of each configuration, and the groups set dense."""

    tokens: int
    rounds: int
    medians: dict[str, float] = field(default_factory=dict)
    dense_groups: list[str] = field(default_factory=list)

    def summary(self) -> str:
        base = self.medians[ALL_SPARSE]
        times = ", ".join(f"{name} {1e3 * t:.2f} ms" + ("" if name == ALL_SPARSE else f" ({t / base:.2f}x)")
                          for name, t in self.medians.items())
        dense = ", ".join(self.dense_groups) or "none"
        return f"layouts timed at load (1 x {self.tokens} tokens, median of {self.rounds}): {times}; dense: {dense}"


def choose_dense_groups(groups: Sequence[Group], time_forward: Callable[[frozenset], float], rounds: int = 7,
                        warmup: int = 2) -> tuple[frozenset, dict[frozenset, float]]:
    """The groups to run dense, and the median time of every configuration timed (a frozenset of the groups set
    dense; frozenset() is every candidate sparse). time_forward(dense_groups) returns the seconds of one forward
    with those groups dense and the others sparse; the configurations are called in turn, round by round, so that
    drifts in the machine's speed fall on all of them alike.

    Phase 1 times all sparse, all dense and each group flipped to dense alone; the groups whose flip was faster
    than all sparse make the greedy choice. Where that choice was not itself timed (two or more groups flipped, not
    all), phase 2 times it against phase 1's fastest configuration, and the faster of the two is the answer."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0 (got {rounds}, {warmup})")
    sparse = frozenset()
    medians = _interleaved_medians([sparse, frozenset(groups), *(frozenset([g]) for g in groups)], time_forward,
                                   rounds, warmup)
    greedy = frozenset(g for g in groups if medians[frozenset([g])] < medians[sparse])
    if greedy not in medians:
        best = min(medians, key=medians.get)
        medians.update(_interleaved_medians([greedy, best], time_forward, rounds, warmup))
    return min(medians, key=lambda c: (medians[c], len(c))), medians  # a tie keeps the smaller, sparse weights


def _interleaved_medians(configs: list[frozenset], time_forward: Callable[[frozenset], float], rounds: int,
                         warmup: int) -> dict[frozenset, float]:
    configs = list(dict.fromkeys(configs))
    samples: dict[frozenset, list[float]] = {c: [] for c in configs}
    for r in range(warmup + rounds):
        for config in configs:
            t = time_forward(config)
            if r >= warmup:
                samples[config].append(t)
    return {c: statistics.median(ts) for c, ts in samples.items()}


def group_of(shape: tuple[int, int], sparsity: float) -> tuple[int, int, float]:
    return (*shape, round(sparsity, 2))


def group_name(group: tuple[int, int, float]) -> str:
    return f"{group[0]}x{group[1]}@{group[2]:.2f}"


def measure_layouts(model: nn.Module, candidates: dict[str, tuple[nn.Module, nn.Module, tuple]],
                    int8_attention: bool = True, tokens: int = 128, rounds: int = 7,
                    calls: int = 3) -> tuple[set[str], LayoutTiming]:
    """candidates: layer name -> (its sparse module, its dense module, its group). Times the configurations of
    `choose_dense_groups` on `model` (a random input of 1 x tokens; its encoders fused for each configuration and
    put back after, so that each runs the forward it would be served with) and returns the names of the layers to run dense.
    One timing is the median of `calls` forwards after an untimed one, so that it is the steady state of a
    model serving one request after another."""
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 1:
        raise ValueError("choose_layout='measure' times the model on random token ids: its config has no vocab_size")
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    tokens = min(tokens, positions or tokens)  # a model with fewer positions is timed at its longest input
    generator = torch.Generator().manual_seed(0)  # the same input for every configuration
    input_ids = torch.randint(vocab, (1, tokens), generator=generator)
    groups = list(dict.fromkeys(group for _, _, group in candidates.values()))

    def time_forward(dense_groups: frozenset) -> float:
        for name, (sparse_module, dense_module, group) in candidates.items():
            set_child(model, name, dense_module if group in dense_groups else sparse_module)
        fuse_encoders(model, int8_attention)
        try:
            with torch.no_grad():
                model(input_ids=input_ids)
                times = []
                for _ in range(calls):
                    start = time.perf_counter()
                    model(input_ids=input_ids)
                    times.append(time.perf_counter() - start)
        finally:
            unfuse_encoders(model)
        return statistics.median(times)

    dense_groups, medians = choose_dense_groups(groups, time_forward, rounds)
    timing = LayoutTiming(tokens, rounds, dense_groups=[group_name(g) for g in groups if g in dense_groups])
    for config, t in medians.items():
        label = (ALL_SPARSE if not config else ALL_DENSE if len(config) == len(groups) > 1
                 else " + ".join(group_name(g) for g in groups if g in config) + " dense")
        timing.medians[label] = t
    return {name for name, (_, _, group) in candidates.items() if group in dense_groups}, timing
