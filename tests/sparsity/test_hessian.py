"""SparseGPT's update (`sparsity.hessian`) against explicit least squares on small layers."""

import torch

from pruneofa.sparsity import hessian


def layer(out_f=5, in_f=6, tokens=40, seed=0):
    """A weight and inputs as activations are: features of unequal scales, correlated through a few
    directions that carry most of the variance."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g, dtype=torch.float64)
    rank = max(2, in_f // 10)
    directions = torch.randn(rank, in_f, generator=g, dtype=torch.float64)
    x = torch.randn(tokens, rank, generator=g, dtype=torch.float64) @ directions
    x = x + 0.3 * torch.randn(tokens, in_f, generator=g, dtype=torch.float64)
    return w, x * torch.linspace(0.2, 2.0, in_f, dtype=torch.float64)


def damped(x, damp):
    h = x.T @ x
    return h + damp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=h.dtype)


def least_squares(w, x, keep, damp):
    """Each row's survivors minimising (w - w')^T H (w - w') with w' = 0 off `keep`: the exact optimum."""
    h, out = damped(x, damp), torch.zeros_like(w)
    for i in range(w.shape[0]):
        k = keep[i].nonzero().flatten()
        # stationarity on the kept entries: H[k, k] w'_k = H[k, :] w
        out[i, k] = torch.linalg.solve(h[k][:, k], h[k] @ w[i])
    return out


def output_error(w, new, x):
    return ((w - new) @ x.T @ x @ (w - new).T).diagonal().sum()


def test_reconstruction_of_the_first_column_is_the_exact_least_squares_optimum():
    # visiting columns in order, a pruned weight in the first column may move every other one: exact OBS
    w, x = layer()
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[:, 0] = False
    keep[2, 3] = True
    new = hessian.reconstruct(w, x.T @ x, keep, 0.01)
    torch.testing.assert_close(new, least_squares(w, x, keep, 0.01), rtol=1e-6, atol=1e-8)


def test_reconstruction_zeroes_exactly_and_beats_plain_masking_on_the_inputs():
    w, x = layer(out_f=16, in_f=300, tokens=600, seed=1)  # more columns than one lazy block (128)
    g = torch.Generator().manual_seed(2)
    keep = torch.rand(w.shape, generator=g) > 0.7
    earlier = torch.rand(w.shape, generator=g) > 0.2  # pruned before: zero in the effective weight, pruned again
    w = w * earlier
    keep &= earlier
    new = hessian.reconstruct(w.float(), (x.T @ x).float(), keep, 0.01).double()
    assert (new[~keep] == 0).all()
    masked, best = output_error(w, w * keep, x), output_error(w, least_squares(w, x, keep, 0.01), x)
    error = output_error(w, new, x)
    # between the optimum and no update at all: visiting columns in order, the last pruned weights of a
    # row have few columns left to make up for them, so it is far from the optimum on such inputs
    assert best <= error < 0.9 * masked


def test_the_weights_of_a_dead_input_are_zeroed_and_the_rest_stay_finite():
    w, x = layer()
    x[:, 4] = 0.0
    new = hessian.reconstruct(w, x.T @ x, torch.ones_like(w, dtype=torch.bool), 0.01)
    assert (new[:, 4] == 0).all() and torch.isfinite(new).all()
    # zeroing them is free on these inputs: the other weights stay where they were
    torch.testing.assert_close(new[:, [0, 1, 2, 3, 5]], w[:, [0, 1, 2, 3, 5]])
