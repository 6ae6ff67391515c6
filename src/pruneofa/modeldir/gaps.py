"""A sparse tensor's positions as zero runs: one byte per non-zero, for entropy coding.

    runs    = for each non-zero (row-major), the number of zeros since the previous non-zero
    byte    = a run r is written as r // 255 bytes of 255 ("255 zeros, no non-zero yet"), then r % 255
    values  = flatten(t)[flatten(t) != 0]   as in bitmask.py; zeros after the last non-zero are implied

This carries the same information as the bitmask but in the form a byte-wise entropy coder handles
well: at 90% sparsity the runs are geometric with mean 9, whose entropy (4.7 bits per non-zero,
0.47 bit per weight) zstd reaches within about 1%; the coded bitmask stays 3% over it at zstd's
slowest levels and 8 to 15% over at its fast ones (numbers in coding.py). Raw, the runs take 0.1
byte per weight at 90% sparsity against the bitmask's 0.125, but only coded files use them
(format version 2), so that uncoded files stay readable by older versions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

ESCAPE = 255


def pack(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(zero runs as uint8, 1-d non-zero values in the tensor's dtype)."""
    flat = tensor.detach().reshape(-1)
    keep = flat != 0
    positions = np.flatnonzero(keep.cpu().numpy())
    runs = np.diff(positions, prepend=-1) - 1
    escapes = runs // ESCAPE
    out = np.full(len(runs) + int(escapes.sum()), ESCAPE, dtype=np.uint8)
    out[np.cumsum(escapes + 1) - 1] = runs % ESCAPE  # each run's last byte; escapes stay 255
    return torch.from_numpy(out), flat[keep].clone()


def positions(runs: torch.Tensor, numel: int) -> np.ndarray:
    """Flat indices of the non-zeros; ValueError when the runs go past `numel` elements."""
    codes = runs.numpy().astype(np.int64)
    ends = np.cumsum(codes + (codes != ESCAPE))  # a byte < 255 also covers the non-zero it ends at
    if ends.size and ends[-1] > numel:
        raise ValueError(f"zero runs cover {int(ends[-1])} elements of {numel}")
    return ends[codes != ESCAPE] - 1


def unpack(runs: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `pack`."""
    n = math.prod(shape)
    where = positions(runs, n)
    if where.size != values.numel():
        raise ValueError(f"zero runs give {where.size} non-zeros, {values.numel()} values stored")
    flat = torch.zeros(n, dtype=values.dtype)
    flat[torch.from_numpy(where)] = values
    return flat.reshape(shape)
