"""Latency by interleaved rounds: every round runs each engine once, in a new random order, so that
load from other processes on a shared machine falls on all engines alike (and ratios of medians
taken in the same run stay meaningful when absolute times do not)."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from pruneofa.fileio import atomic_write_text


def interleaved(calls: dict[str, Callable[[], Any]], rounds: int, warmup: int, rng: random.Random,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each call by `clock` (wall time by default; time.thread_time gives the calling
    thread's CPU time) over `rounds` rounds, after `warmup` rounds not recorded."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for i in range(warmup + rounds):
        rng.shuffle(order)
        for name in order:
            start = clock()
            calls[name]()
            if i >= warmup:
                times[name].append(clock() - start)
    return times


def p90(values: list[float]) -> float:
    """The 90th percentile by nearest rank (the largest value for fewer than 10 samples)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def latency_stats(seconds: list[float], batch: int) -> dict[str, float]:
    median = statistics.median(seconds)
    return {"median_ms": 1e3 * median, "p90_ms": 1e3 * p90(seconds), "min_ms": 1e3 * min(seconds),
            "seq_per_s": batch / median}


def add_round_options(parser: argparse.ArgumentParser, threads: int, rounds: int = 10,
                      warmup: int = 2) -> argparse.ArgumentParser:
    """--threads, --rounds, --warmup and --json: the options of the bench/ scripts timed by `interleaved`."""
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--json")
    return parser


def report_result(result: dict[str, Any], json_path: str | None, print_json: bool = True) -> dict[str, Any]:
    """Print `result` as JSON (unless the script printed its own table) and write it to `json_path` (--json),
    whole or not at all; returns it."""
    text = json.dumps(result, indent=1)
    if print_json:
        print(text)
    if json_path:
        atomic_write_text(Path(json_path), text)
    return result
