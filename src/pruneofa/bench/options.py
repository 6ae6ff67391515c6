"""What `pruneofa bench` measures, as one typed value shared by the CLI, the pipeline's `bench` step and Python.

The CLI and a pipeline step hand over loose values ("1,8" or [1, 8], "sparse,ort"); `BenchOptions.parse`
turns them into this one checked object, so `run_benchmark` has two parameters instead of thirteen.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pruneofa.errors import UserError


@dataclass(frozen=True)
class BenchOptions:
    batch_sizes: tuple[int, ...] = (1,)
    seq_len: int = 128
    engines: tuple[str, ...] | None = None  # None: every engine; the fp32 reference always runs
    rounds: int = 20                        # timed rounds, every engine interleaved
    warmup: int = 3                         # untimed rounds first
    threads: int | None = None              # None: pruneofa.runtime.default_threads()
    measure_memory: bool = True             # a subprocess per engine for its peak RSS
    baseline: str | None = None             # another model dir timed as dense fp32 in the same rounds
    compact: bool = False                   # benchmark the model rebuilt without its zero heads / neurons
    encode: bool = False                    # time sentence embeddings instead of the forward
    decode: bool = False                    # time a causal LM's prefill and per-token step (KV cache)
    seed: int = 0                           # of the random inputs and the round order

    @property
    def mode(self) -> str:
        """What one timed call does: "forward" (the model's forward), "encode" (sentence embeddings) or
        "decode" (a causal LM's prefill and per-token step, two rows per engine)."""
        return "encode" if self.encode else "decode" if self.decode else "forward"

    def engines_to_run(self) -> list[str]:
        """The engines to run (the reference first, always), after refusing impossible settings."""
        from pruneofa.bench.decode import DECODE_ENGINES  # the engine tables import torch: only when it runs
        from pruneofa.bench.engines import ENCODE_ENGINES, ENGINES, OPT_IN, REFERENCE

        if not self.batch_sizes or any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise UserError(f"bad batch sizes {list(self.batch_sizes)}", "pass positive integers, e.g. --batch-sizes 1,8")
        if self.seq_len < 1:
            raise UserError(f"sequence length {self.seq_len} is not positive", "pass e.g. --seq-len 128")
        if self.rounds < 1 or self.warmup < 0:
            raise UserError(f"rounds={self.rounds}, warmup={self.warmup}", "pass --rounds 1 or more and --warmup 0 or more")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads={self.threads}", "pass --threads 1 or more, or leave it out to use the machine's CPUs")
        if self.encode and self.decode:
            raise UserError("--encode and --decode are two different benchmarks", "pass one of them")
        if self.mode != "forward" and (self.baseline is not None or self.compact):
            raise UserError(f"--{self.mode} does not combine with --baseline or --compact", "drop one of them")
        table = {"encode": ENCODE_ENGINES, "decode": DECODE_ENGINES}.get(self.mode, ENGINES)
        names = ([e for e in table if e not in OPT_IN] if self.engines is None
                 else list(dict.fromkeys(self.engines)))
        unknown = [e for e in names if e not in table]
        if unknown:
            problem = (f"engine '{unknown[0]}' does not serve --{self.mode}" if table is not ENGINES
                       and unknown[0] in ENGINES else f"unknown engine '{unknown[0]}'")
            raise UserError(problem, f"choose from {', '.join(table)}")
        return [REFERENCE] + [e for e in names if e != REFERENCE]

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def parse(cls, **values: Any) -> BenchOptions:
        """From CLI strings or YAML values; None means the default. An unknown name is refused."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise UserError(f"unknown bench option(s) {', '.join(unknown)}", f"use: {', '.join(cls.names())}")
        given = {k: v for k, v in values.items() if v is not None}
        if "batch_sizes" in given:
            given["batch_sizes"] = parse_batch_sizes(given["batch_sizes"])
        if "engines" in given:
            given["engines"] = parse_engines(given["engines"])
        if given.get("baseline") is not None:
            given["baseline"] = str(given["baseline"])
        return cls(**given)


def parse_batch_sizes(value: str | int | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """'1,8' (the CLI), 8 or [1, 8] (a pipeline step's YAML) -> (1, 8)."""
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        sizes = tuple(int(str(part).strip()) for part in parts)
    except ValueError:
        sizes = ()
    if not sizes or any(b < 1 for b in sizes):
        raise UserError(f"bad --batch-sizes '{value}'", "pass positive integers separated by commas, e.g. --batch-sizes 1,8")
    return sizes


def parse_engines(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'sparse,ort' (the CLI) or [sparse, ort] (YAML) -> ("sparse", "ort")."""
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(str(e).strip() for e in parts if str(e).strip())
