"""The Optimal BERT Surgeon's second-order math (Kurtic et al. 2022), on blocks of one layer.

A layer's (out, in) weight is flattened row-major and cut into blocks of B consecutive weights
(the last one zero-padded). Within a block the loss is modelled by the empirical Fisher of the
last m observed gradients g_1..g_m (restricted to the block), dampened by lambda:

    F = lambda I + (1/m) sum_k g_k g_k^T                                  (B x B per block)

Blocks are independent (F is block-diagonal), so everything is batched over the blocks of a layer.
F^-1 is never formed by inversion: starting from I / lambda, each gradient is folded in with the
Sherman-Morrison (rank-one Woodbury) identity

    F^-1 <- F^-1 - (F^-1 g)(F^-1 g)^T / (m + g^T F^-1 g)

which costs B^2 per weight and gradient instead of B^3 per block for an inverse. Then:

    score_i = w_i^2 / (2 [F^-1]_ii)          the loss increase of zeroing w_i alone (higher = keep)

and, once the set Q of pruned entries of a block is known (new and old ones), the OBS update of
the weights that stay, the minimiser of the quadratic model under w_Q + dw_Q = 0:

    dw = -F^-1[:, Q] (F^-1[Q, Q])^-1 w_Q

batched as one linear solve per block: with P = diag(1_Q), (P F^-1 P + (I - P)) z = P w gives
z = (F^-1[Q,Q])^-1 w_Q on Q and 0 elsewhere, and dw = -F^-1 z.

Gradients given here are the masked ones (`original.grad` = mask * dL/dw_eff): zeros on pruned
entries decouple them in F, so F^-1 restricted to the surviving weights is exactly the inverse of
their own Fisher, which is what OBS needs since pruned entries stay at zero.

Memory: F^-1 of a layer is numel * B floats (B = 32: 302 MB for a 768 x 3072 matrix), so it is
built in chunks of at most `CHUNK_FLOATS` floats (the update needs about three times that), and
built twice when weights are updated (once for the scores, once after the mask is chosen) rather
than kept for the whole model.
"""

from __future__ import annotations

import torch

CHUNK_FLOATS = 1 << 25  # F^-1 floats per chunk: 128 MB in fp32


def to_blocks(flat: torch.Tensor, block: int) -> torch.Tensor:
    """(..., n) -> (..., ceil(n / B), B), zero-padded. Padded entries have w = g = 0: they stay
    decoupled from the real ones (F^-1 = 1 / lambda there) and are cut off again by the callers."""
    pad = (-flat.shape[-1]) % block
    padded = torch.nn.functional.pad(flat, (0, pad)) if pad else flat
    return padded.reshape(*flat.shape[:-1], padded.shape[-1] // block, block)  # explicit: m may be 0


def fisher_inverse(grads: torch.Tensor, damp: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """(lambda I + (1/m) sum_k g_k g_k^T)^-1 for every block: grads (m, blocks, B) -> (blocks, B, B).

    With m = 0 it is I / lambda (no curvature seen: scores become lambda w^2 / 2, i.e. magnitude).
    `out` (blocks, B, B) is reused if given: fresh 100 MB allocations cost more in page faults than
    the arithmetic.
    """
    m, n_blocks, block = grads.shape
    finv = torch.empty(n_blocks, block, block, device=grads.device) if out is None else out[:n_blocks]
    finv.zero_().diagonal(dim1=-2, dim2=-1).fill_(1.0 / damp)
    for g in grads.float():  # (blocks, B): one Sherman-Morrison step for all blocks at once
        # u = F^-1 g, computed as g^T F^-1 (F^-1 is symmetric): the row-vector bmm is ~3x faster on CPU
        u = torch.bmm(g.unsqueeze(-2), finv).squeeze(-2)
        denom = m + (g * u).sum(-1)  # > 0: F^-1 stays positive definite
        u = u / denom.sqrt().unsqueeze(-1)
        finv.baddbmm_(u.unsqueeze(-1), u.unsqueeze(-2), alpha=-1.0)  # in place: no (blocks, B, B) temporary
    return finv


def block_scores(weights: torch.Tensor, finv: torch.Tensor) -> torch.Tensor:
    """w_i^2 / (2 [F^-1]_ii) for weights (blocks, B) and their F^-1 (blocks, B, B)."""
    diag = torch.diagonal(finv, dim1=-2, dim2=-1)
    # F^-1 is positive definite; the floor only guards against fp32 round-off on a near-singular block
    return weights.float().pow(2) / (2 * diag.clamp_min(torch.finfo(diag.dtype).tiny))


def block_update(weights: torch.Tensor, finv: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """dw = -F^-1[:, Q] (F^-1[Q, Q])^-1 w_Q per block, Q = `pruned` (blocks, B) bool."""
    p = pruned.float()
    # P F^-1 P + (I - P): F^-1[Q,Q] on Q, identity elsewhere, so positive definite like F^-1
    system = finv * (p.unsqueeze(-1) * p.unsqueeze(-2))
    system.diagonal(dim1=-2, dim2=-1).add_(1.0 - p)
    z = torch.linalg.solve(system, (p * weights.float()).unsqueeze(-1))
    return -torch.bmm(finv, z).squeeze(-1)


def _chunks(n_blocks: int, block: int) -> range:
    return range(0, n_blocks, max(1, CHUNK_FLOATS // (block * block)))


def _buffer(n_blocks: int, block: int, device: torch.device) -> torch.Tensor:
    return torch.empty(min(n_blocks, _chunks(n_blocks, block).step), block, block, device=device)


def layer_scores(weight: torch.Tensor, grads: torch.Tensor, block: int, damp: float) -> torch.Tensor:
    """OBS score of every weight of one (out, in) layer, from its masked gradients (m, out * in)."""
    w = to_blocks(weight.reshape(-1).float(), block)
    g = to_blocks(grads.float(), block)
    size, buffer = _chunks(w.shape[0], block).step, _buffer(w.shape[0], block, w.device)
    scores = torch.cat([block_scores(w[a:a + size], fisher_inverse(g[:, a:a + size], damp, buffer))
                        for a in _chunks(w.shape[0], block)])
    return scores.reshape(-1)[: weight.numel()].view_as(weight)


def layer_update(weight: torch.Tensor, grads: torch.Tensor, keep: torch.Tensor, block: int, damp: float
                 ) -> torch.Tensor:
    """The (out, in) weight after the OBS update towards keep-mask `keep`; pruned entries exactly 0.

    `weight` is the effective weight (mask * original), so entries pruned earlier are 0 and, being
    in Q, stay there; the update moves only the weights that `keep` keeps.
    """
    w = to_blocks(weight.reshape(-1).float(), block)
    g = to_blocks(grads.float(), block)
    pruned = to_blocks((~keep).reshape(-1).float(), block) > 0  # padding counts as kept: it is cut off below
    out = torch.empty_like(w)
    size, buffer = _chunks(w.shape[0], block).step, _buffer(w.shape[0], block, w.device)
    for a in _chunks(w.shape[0], block):
        finv = fisher_inverse(g[:, a:a + size], damp, buffer)
        out[a:a + size] = w[a:a + size] + block_update(w[a:a + size], finv, pruned[a:a + size])
    new = out.reshape(-1)[: weight.numel()].view_as(weight)
    # the solve leaves round-off on Q; the mask makes it exactly zero
    return (new * keep).to(weight.dtype)
