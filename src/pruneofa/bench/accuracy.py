"""Each engine's output against the fp32 reference (`torch`) on the same inputs, so that a fast but
wrong engine shows in the table.

Tolerances, on the relative error ||out - ref|| / ||ref|| of the primary output:
- fp32 engines: 1e-3 (summation order and fused kernels only; measured about 1e-6);
- int8 engines: 0.1 (per-token or per-tensor int8 activations of every Linear; measured 1-4% on
  random-weight BERTs). Cosine similarity and max abs diff are recorded beside it.
"""

from __future__ import annotations

import torch

TOLERANCE = {"fp32": 1e-3, "int8": 0.1}


def compare(out: torch.Tensor, ref: torch.Tensor, precision: str) -> dict[str, float | bool]:
    out, ref = out.detach().float().reshape(-1), ref.detach().float().reshape(-1)
    if out.shape != ref.shape:
        return {"max_abs_diff": float("inf"), "cosine": 0.0, "rel_err": float("inf"),
                "tolerance": TOLERANCE[precision], "matches_reference": False}
    diff = out - ref
    rel_err = float(diff.norm() / ref.norm().clamp_min(1e-30))
    return {
        "max_abs_diff": float(diff.abs().max()),
        "cosine": float(torch.nn.functional.cosine_similarity(out, ref, dim=0)),
        "rel_err": rel_err,
        "tolerance": TOLERANCE[precision],
        "matches_reference": rel_err <= TOLERANCE[precision],
    }
