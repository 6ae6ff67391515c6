"""When a sparse kernel beats the dense one for a layer: measured break-even sparsities, per kernel set.

A layer runs sparse only if its sparsity is at least the break-even sparsity for its shape
(the sparsity at which the sparse kernel and the dense kernel of the same precision take the same
time, batch 1 x 128 tokens), plus a small margin. One table per kernel set (`kernels.kernel_label()`),
each measured on a CPU that runs it: "avx512-vnni" on the 2-core AVX-512/VNNI EPYC this project
first targeted, "avx2" on a 2-core AMD EPYC without AVX-512; the nearest measured shape (in log
in/out features) stands in for others, and a kernel set without a table of its own uses the VNNI one.
Dense references: MKL fp32 (`F.linear`) for "sparse"; for "sparse-int8" the runtime's own dense int8
kernel (`formats` layout "dense"), which a Linear below its break-even runs on, so that the encoder
stays one native call (with VNNI it is 1.1-1.4x fbgemm's speed on these shapes; with AVX2, exact
int8 without VNNI costs a sign per product vector, and it runs at 0.7-0.95x fbgemm's).
"""

from __future__ import annotations

import math

# (in_features, out_features) -> break-even sparsity. Measured with
# `bench/runtime_speed.py --break-even --threads 1 --clock thread` (CPU time, batch 1 x 128 tokens,
# one Linear per call, token-major in and out, i.e. the per-layer path; random unstructured weights):
# "sparse" and (later) "sparse-int8" 2026-11-24, the latter against the dense int8 kernel, mean of
# two runs of 40 rounds (spread <= 0.07). The earlier int8 table (0.62-0.65, against fbgemm) mostly measured
# where the quads' auto layout switched from blocks to gather (formats.pack_quads_i8's gather_cost,
# then 2.5); with gather kept down to ~0.4 sparsity the gather kernel beats fbgemm from 0.3-0.57.
BREAK_EVEN_SPARSITY: dict[str, dict[tuple[int, int], float]] = {
    "sparse": {
        (384, 384): 0.47, (384, 1536): 0.42, (1536, 384): 0.49,
        (768, 768): 0.47, (768, 3072): 0.38, (3072, 768): 0.59,
    },
    "sparse-int8": {
        (384, 384): 0.50, (384, 1536): 0.46, (1536, 384): 0.57,
        (768, 768): 0.58, (768, 3072): 0.55, (3072, 768): 0.60,
    },
}
# `bench/runtime_speed.py --break-even --threads 1 --clock thread --rounds 20`, 2026-12-04, AMD EPYC
# without AVX-512 (AVX2 + FMA), load average ~6 (CPU time). The int8 quads beat the AVX2 dense int8
# kernel already at the grid's lowest sparsity, 0.30, on five shapes of six: 0.30 stands for "<= 0.30".
# (Against fbgemm, which is faster than that kernel here, they break even at 0.38-0.59.) fp32 CSR
# needs more sparsity than with AVX-512: MKL's AVX2 GEMM is closer to the FMA peak than the CSR loop.
BREAK_EVEN_SPARSITY_AVX2: dict[str, dict[tuple[int, int], float]] = {
    "sparse": {
        (384, 384): 0.65, (384, 1536): 0.57, (1536, 384): 0.73,
        (768, 768): 0.62, (768, 3072): 0.64, (3072, 768): 0.79,
    },
    "sparse-int8": {
        (384, 384): 0.30, (384, 1536): 0.30, (1536, 384): 0.30,
        (768, 768): 0.30, (768, 3072): 0.30, (3072, 768): 0.38,
    },
}
# AMX tiles (kernel label "avx512-vnni+amx"): the dense int8 layout runs on tiles, about 2x the VNNI
# kernel's speed, and the int8 quads (still vpdpbusd) need far more sparsity to beat it. Per Linear
# (`--break-even --threads 1 --clock thread --rounds 20`, 2026-12-06, Intel Xeon with AMX, quiet) the
# break-even is 0.88-0.92 at 128 tokens; in the whole one-call encoder (every layer at one sparsity,
# sparse-int8 against the same model on tiles, 2 threads, interleaved medians; docs/RESULTS.md) it is
# 0.86-0.88 at 128 tokens and 0.83-0.84 at 32 (two runs of `--model-break-even`): the quads' smaller
# weight stream pays more in a model whose weights come from DRAM. The table takes the short-input
# figure (sentence embeddings are short; at 128 tokens a layer between 0.84 and 0.87 sparse loses <= 6%
# to the tiles), so that a 90% model, whose layers sit right at 0.90, stays sparse past the margin.
# fp32 is unchanged (no tiles).
BREAK_EVEN_SPARSITY_AMX: dict[str, dict[tuple[int, int], float]] = {
    "sparse": BREAK_EVEN_SPARSITY["sparse"],
    "sparse-int8": dict.fromkeys(BREAK_EVEN_SPARSITY["sparse-int8"], 0.84),
}
# "avx2-vnni" (AVX2 + AVX-VNNI, no AVX-512) has no CPU of its own here to measure on: it reads the AVX2 table, whose
# kernels it runs with one instruction less per product vector.
TABLES = {"avx512-vnni": BREAK_EVEN_SPARSITY, "avx2": BREAK_EVEN_SPARSITY_AVX2, "avx2-vnni": BREAK_EVEN_SPARSITY_AVX2,
          "avx512-vnni+amx": BREAK_EVEN_SPARSITY_AMX}
MARGIN = 0.05  # stay dense near the break-even point: noise there, and dense is the safer path


def _kernel_isa() -> str | None:
    from pruneofa.runtime import kernels
    from pruneofa.runtime.build import kernels_available

    return kernels.kernel_label() if kernels_available() else None


def break_even_sparsity(engine: str, n_in: int, n_out: int, isa: str | None = None) -> float:
    """isa: the kernel set whose table to read, as `kernels.kernel_label()` names it (default: the one
    this machine runs, AMX tiles included)."""
    table = TABLES.get(isa or _kernel_isa(), BREAK_EVEN_SPARSITY)[engine]

    def distance(shape: tuple[int, int]) -> float:
        return abs(math.log(shape[0] / n_in)) + abs(math.log(shape[1] / n_out))

    return table[min(table, key=distance)]


def use_sparse(engine: str, n_in: int, n_out: int, sparsity: float, isa: str | None = None) -> bool:
    return sparsity >= break_even_sparsity(engine, n_in, n_out, isa) + MARGIN
