"""When a sparse kernel beats the dense one for a layer: measured break-even sparsities.

A layer runs sparse only if its sparsity is at least the break-even sparsity for its shape
(the sparsity at which the sparse kernel and the dense kernel of the same precision take the same
time, batch 1 x 128 tokens), plus a small margin. Measured on the 2-core AVX-512/VNNI EPYC this
project targets; the nearest measured shape (in log in/out features) stands in for others.
Dense references: MKL fp32 (`F.linear`) for "sparse"; for "sparse-int8" the runtime's own dense int8
kernel (`formats` layout "dense"), which a Linear below its break-even runs on, so that the encoder
stays one native call (it is 1.1-1.4x fbgemm's speed on these shapes, same measurement).
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
MARGIN = 0.05  # stay dense near the break-even point: noise there, and dense is the safer path


def break_even_sparsity(engine: str, n_in: int, n_out: int) -> float:
    table = BREAK_EVEN_SPARSITY[engine]

    def distance(shape: tuple[int, int]) -> float:
        return abs(math.log(shape[0] / n_in)) + abs(math.log(shape[1] / n_out))

    return table[min(table, key=distance)]


def use_sparse(engine: str, n_in: int, n_out: int, sparsity: float) -> bool:
    return sparsity >= break_even_sparsity(engine, n_in, n_out) + MARGIN
