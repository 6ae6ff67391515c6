"""Making up for pruned weights on a layer's own inputs (SparseGPT, Frantar & Alistarh 2023).

A Linear layer's output error on its inputs X (tokens x in) is, for every output row w,

    E(w') = ||X (w - w')||^2 = (w - w')^T H (w - w'),        H = X^T X   (in x in, one for all rows)

so the curvature of every row is the same small matrix H, accumulated from the layer's inputs
(`criteria.Wanda` sums it with a forward pre-hook when `pruning.reconstruct` is on) where
`sparsity.obs` needs a buffer of gradients for the Fisher. It is dampened by a share of its mean
diagonal:

    H <- H + lambda I,      lambda = damp * mean(diag H)

Wanda's score |w_ij| * ||X_j|| is the square root of the cost of zeroing w_ij alone under the
diagonal of H. (OBS's w_ij^2 / [H^-1]_jj, the same cost when the rest of the row may move, chose
worse masks than Wanda's per-layer threshold in our probe of a real layer; docs/RESULTS.md.)

Once the keep-mask is chosen, `reconstruct` moves the surviving weights to make up for the pruned
ones, column by column as SparseGPT does: with U the upper Cholesky factor of H^-1, zeroing column
j's pruned entries changes the row error by err = w_j / U_jj, paid back on the columns not yet
visited:   W[:, j:] -= err U[j, j:].   Visiting columns in order makes each step exact for the
columns left, and costs out x in^2 instead of one solve per row. Batched in blocks of columns, with
the updates of a block applied to the later columns at once.
"""

from __future__ import annotations

import torch

COLUMN_BLOCK = 128  # columns per lazy batch of the reconstruction (SparseGPT's B)


def dampened(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(H + lambda I, dead): lambda = damp * mean(diag H); `dead` marks inputs that were always 0.

    A dead input's weights change no output: its diagonal is set to 1 so that H stays invertible
    (and `reconstruct` zeroes those weights: they cost nothing)."""
    h = hessian.double().clone()
    diag = h.diagonal()
    dead = diag == 0
    diag[dead] = 1.0
    diag.add_(damp * diag.mean())
    return h, dead


def inverse(hessian: torch.Tensor) -> torch.Tensor:
    """H^-1 of a positive definite H, through its Cholesky factor (float64: H is ill-conditioned)."""
    return torch.cholesky_inverse(torch.linalg.cholesky(hessian))


def reconstruct(weight: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor, damp: float) -> torch.Tensor:
    """The (out, in) weight under keep-mask `keep` after SparseGPT's update of the survivors.

    `weight` is the effective weight (entries pruned earlier are 0: they cost nothing and stay 0).
    Pruned entries of the result are exactly 0.
    """
    h, dead = dampened(hessian, damp)
    u = torch.linalg.cholesky(inverse(h), upper=True)
    w = weight.double().clone()
    w[:, dead] = 0.0
    pruned = ~keep
    columns = w.shape[1]
    for a in range(0, columns, COLUMN_BLOCK):
        b = min(a + COLUMN_BLOCK, columns)
        block, u_block = w[:, a:b], u[a:b, a:b]
        errors = torch.zeros_like(block)
        for j in range(b - a):
            err = torch.where(pruned[:, a + j], block[:, j], 0.0) / u_block[j, j]
            block[:, j:] -= err[:, None] * u_block[j, j:][None, :]
            errors[:, j] = err
        w[:, b:] -= errors @ u[a:b, b:]
    return (w * keep).to(weight.dtype)
