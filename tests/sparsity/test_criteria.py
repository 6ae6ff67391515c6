"""Pruning criteria (magnitude, obs, wanda and its reconstruction) against explicit, unbatched references on layers small
enough to check by hand, through the Pruner as the training loop drives it."""

import logging

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from pruneofa import Pruner, PruningConfig
from pruneofa.sparsity import masks as M
from pruneofa.sparsity.obs import fisher_inverse, layer_scores, layer_update, to_blocks


# --- explicit references (float64, one block at a time, no padding) --------------------------------
def block_slices(n, block):
    return [slice(a, min(a + block, n)) for a in range(0, n, block)]


def explicit_finv(grads, s, damp):
    """(damp I + (1/m) sum g g^T)^-1 on the entries `s` of the flattened weight, by torch.linalg.inv."""
    g = grads[:, s].double()
    fisher = damp * torch.eye(g.shape[1], dtype=torch.float64) + g.T @ g / max(len(g), 1)
    return torch.linalg.inv(fisher)


def explicit_obs_scores(w, grads, block, damp):
    flat, out = w.reshape(-1).double(), torch.empty(w.numel(), dtype=torch.float64)
    for s in block_slices(w.numel(), block):
        out[s] = flat[s] ** 2 / (2 * torch.diagonal(explicit_finv(grads, s, damp)))
    return out.view_as(w)


def explicit_obs_update(w, grads, keep, block, damp):
    """w + dw with dw = -F^-1[:, Q] (F^-1[Q, Q])^-1 w_Q per block, Q the pruned entries."""
    flat, pruned = w.reshape(-1).double().clone(), ~keep.reshape(-1)
    for s in block_slices(w.numel(), block):
        finv, q = explicit_finv(grads, s, damp), pruned[s].nonzero().flatten()
        if len(q):
            flat[s] -= finv[:, q] @ torch.linalg.solve(finv[q][:, q], flat[s][q])
    return flat.view_as(w)


def wanda_scores(w, inputs):
    x = torch.cat([i.reshape(-1, w.shape[1]) for i in inputs]).double()
    return w.abs().double() * x.pow(2).sum(0).sqrt()[None, :]


# --- one-layer models driven like the training loop -------------------------------------------------
def one_layer(kind="linear", out_f=2, in_f=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_f, out_f, bias=False) if kind == "linear" else Conv1D(out_f, in_f))


def oneshot(model, at, **kw):
    return Pruner(model, **{"method": "oneshot", "start_step": at, "target_sparsity": 0.5, "include": [r"^0$"], **kw})


def feed_gradients(pruner, grads):
    """Steps 1..m: each (out, in) gradient lands on the stored weight, then the loop's hook runs."""
    layer = pruner.layers["0"]
    for step, g in enumerate(grads, start=1):
        M.original_weight(layer).grad = M.from_out_in(layer, g.clone())
        pruner.observe_gradients(step)


def feed_inputs(model, inputs):
    """Training forwards of `inputs`, then an evaluation forward that must not count."""
    model.train()
    for x in inputs:
        model(x)
    model.eval()
    model(torch.randn(7, inputs[0].shape[-1]) * 100)


def out_in(layer):
    return M.as_out_in(layer, layer.weight).detach()


# --- obs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("block", [4, 3, 8])  # 3: the last block of 8 weights is padded
def test_woodbury_inverse_equals_explicit_block_fisher(block):
    torch.manual_seed(1)
    grads = torch.randn(3, 8)  # a 2x4 layer, flattened
    finv = fisher_inverse(to_blocks(grads, block), damp=0.5)
    for b, s in enumerate(block_slices(8, block)):
        n = s.stop - s.start
        torch.testing.assert_close(finv[b, :n, :n].double(), explicit_finv(grads, s, 0.5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,block", [("linear", 4), ("linear", 3), ("conv1d", 4)])
def test_obs_scores_masks_and_update_equal_the_explicit_formulas(kind, block):
    model = one_layer(kind)
    pruner = oneshot(model, at=3, criterion="obs", obs_num_grads=3, obs_block_size=block, obs_damp=0.3,
                     obs_update_weights=True)
    w = out_in(pruner.layers["0"]).clone()
    grads = torch.randn(3, 2, 4)
    feed_gradients(pruner, grads)
    flat_grads = grads.reshape(3, -1)
    torch.testing.assert_close(layer_scores(w, flat_grads, block, 0.3).double(),
                               explicit_obs_scores(w, flat_grads, block, 0.3), rtol=1e-5, atol=1e-7)
    assert pruner.step(3)
    keep = M.as_out_in(pruner.layers["0"], M.get_mask(pruner.layers["0"]))
    scores = explicit_obs_scores(w, flat_grads, block, 0.3)
    assert (~keep).sum() == 4 and scores[~keep].max() <= scores[keep].min()
    after = out_in(pruner.layers["0"])
    stored = M.as_out_in(pruner.layers["0"], M.original_weight(pruner.layers["0"])).detach()
    assert (after[~keep] == 0).all() and (stored[~keep] == 0).all()  # the stored weight too, not just the mask
    expected = explicit_obs_update(w, flat_grads, keep, block, 0.3)
    torch.testing.assert_close(after.double(), expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(after[keep], w[keep])  # the survivors did move


def test_obs_update_keeps_earlier_zeros_at_zero_and_only_moves_survivors():
    torch.manual_seed(2)
    w = torch.randn(2, 4)
    w[0, 1] = 0.0  # pruned earlier: its gradients are masked to zero too
    grads = torch.randn(4, 2, 4)
    grads[:, 0, 1] = 0.0
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, 1] = keep[1, 2] = False
    flat = grads.reshape(4, -1)
    new = layer_update(w, flat, keep, 4, 0.2)
    assert new[0, 1] == 0 and new[1, 2] == 0
    torch.testing.assert_close(new.double(), explicit_obs_update(w, flat, keep, 4, 0.2), rtol=1e-4, atol=1e-5)
    only_old = keep.clone()
    only_old[1] = True  # row 1 (one block) loses nothing new: left exactly as it was
    assert torch.equal(layer_update(w, flat, only_old, 4, 0.2)[1], w[1])


def test_obs_update_zeroes_exactly_at_realistic_scale():
    # defaults (B = 32, lambda = 1e-7) and BERT-like gradients: the solve leaves round-off on Q
    torch.manual_seed(4)
    w, grads, keep = torch.randn(16, 32), torch.randn(8, 512) * 1e-3, torch.rand(16, 32) > 0.5
    new = layer_update(w, grads, keep, 32, 1e-7)
    assert (new[~keep] == 0).all() and torch.isfinite(new).all() and not torch.equal(new[keep], w[keep])


def test_obs_observes_only_the_window_before_an_update_and_frees_it():
    model = one_layer(out_f=4, in_f=8)
    pruner = Pruner(model, criterion="obs", obs_num_grads=2, start_step=0, target_step=8, frequency=4,
                    target_sparsity=0.5, include=[r"^0$"])
    layer, seen = pruner.layers["0"], []
    for step in range(1, 5):
        M.original_weight(layer).grad = torch.full_like(M.original_weight(layer), float(step))
        pruner.observe_gradients(step)
        seen.append(pruner.criterion.observed)
    assert seen == [0, 0, 1, 2]  # steps 3 and 4 only: the m = 2 steps ending at the update at 4
    assert sorted(pruner.criterion.grads["0"][:, 0].tolist()) == [3.0, 4.0]
    pruner.step(4)
    assert pruner.criterion.observed == 0 and not pruner.criterion.grads


def test_obs_layer_that_got_no_gradient_scores_lambda_w2_over_2():
    model = nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(2, 4, bias=False))
    pruner = Pruner(model, method="oneshot", start_step=1, target_sparsity=0.5, include=[r"^\d$"], criterion="obs",
                    obs_num_grads=1, obs_damp=0.5)
    M.original_weight(pruner.layers["0"]).grad = torch.randn(2, 4)  # layer 1 takes no part in the loss
    pruner.observe_gradients(1)
    w = out_in(pruner.layers["1"]).clone()
    scores = pruner.criterion.scores({"1": (w, torch.ones_like(w, dtype=torch.bool))})["1"]
    torch.testing.assert_close(scores, 0.5 * w**2 / 2)  # F = lambda I: no curvature seen
    assert pruner.step(1) and pruner.overall_sparsity() == 0.5


def test_obs_falls_back_to_magnitude_before_any_gradient_and_logs_once(caplog):
    kw = dict(start_step=0, target_step=8, frequency=4, target_sparsity=0.6, include=[r"^0$"])
    with caplog.at_level(logging.DEBUG, logger="pruneofa.sparsity.criteria"):
        obs = Pruner(one_layer(out_f=4, in_f=8), criterion="obs", obs_num_grads=4, **kw)
        obs.update_masks(0.7)  # again with nothing observed: no second message
    magnitude = Pruner(one_layer(out_f=4, in_f=8), **kw)
    magnitude.update_masks(0.7)
    assert torch.equal(obs.masks()["0"], magnitude.masks()["0"])
    assert sum("no gradient observed" in r.getMessage() for r in caplog.records) == 1


# --- wanda ----------------------------------------------------------------------------------------
def test_wanda_score_is_abs_w_times_the_input_norm_of_training_forwards_only():
    model = one_layer(out_f=2, in_f=4)
    pruner = oneshot(model, at=1, criterion="wanda")
    layer = pruner.layers["0"]
    inputs = [torch.randn(2, 3, 4), torch.randn(5, 4)]
    feed_inputs(model, inputs)
    w = out_in(layer).clone()
    views = {"0": (w, torch.ones_like(w, dtype=torch.bool))}
    expected = wanda_scores(w, inputs)
    torch.testing.assert_close(pruner.criterion.scores(views)["0"].double(), expected, rtol=1e-5, atol=1e-7)
    pruner.step(1)
    keep = M.get_mask(layer)
    assert (~keep).sum() == 4 and expected[~keep].max() <= expected[keep].min()
    assert not layer._forward_pre_hooks  # the last update removed the hooks


def test_wanda_reconstruct_moves_the_survivors_by_sparsegpt_on_the_training_inputs():
    from pruneofa.sparsity.hessian import reconstruct

    model = one_layer(out_f=6, in_f=8, seed=4)
    pruner = oneshot(model, at=1, criterion="wanda", reconstruct=True, reconstruct_damp=0.05)
    layer = pruner.layers["0"]
    torch.manual_seed(5)
    inputs = [torch.randn(3, 5, 8) @ torch.randn(8, 8), torch.randn(9, 8) @ torch.randn(8, 8)]
    feed_inputs(model, inputs)
    w = out_in(layer).clone()
    x = torch.cat([i.reshape(-1, 8) for i in inputs])
    reductions = []
    all_reduced = pruner.criterion._all_reduced
    pruner.criterion._all_reduced = lambda views: reductions.append(list(views)) or all_reduced(views)
    gram = pruner.criterion.gathered({"0": (w, torch.ones_like(w, dtype=torch.bool))})["0"][0]
    torch.testing.assert_close(gram, x.T @ x)
    pruner.step(1)
    assert reductions == [["0"]]  # the scores and the update of step 1 read the totals gathered once
    keep = M.get_mask(layer)
    expected = wanda_scores(w, inputs)  # the scores are wanda's: only the survivors' values change
    assert (~keep).sum() == 24 and expected[~keep].max() <= expected[keep].min()
    new = out_in(layer)
    torch.testing.assert_close(new, reconstruct(w, x.T @ x, keep, 0.05))
    assert (new[~keep] == 0).all() and not torch.equal(new[keep], w[keep])
    error = lambda v: ((x @ (w - v).T) ** 2).sum()  # noqa: E731
    assert error(new) < error(w * keep)


def test_wanda_sums_stay_fp32_under_bf16_autocast():
    # train.precision=bf16: the hook runs inside autocast, where a bf16 X^T X broke the reconstruction's Cholesky
    model = one_layer(out_f=3, in_f=8, seed=2)
    pruner = oneshot(model, at=1, criterion="wanda", reconstruct=True)
    torch.manual_seed(3)
    inputs = [torch.randn(4, 5, 8) * 3 + 1, torch.randn(6, 8)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feed_inputs(model, inputs)
    w = out_in(pruner.layers["0"]).clone()
    gram = pruner.criterion.gathered({"0": (w, torch.ones_like(w, dtype=torch.bool))})["0"][0]
    x = torch.cat([i.reshape(-1, 8) for i in inputs]).double()
    assert gram.dtype == torch.float32
    torch.testing.assert_close(gram.double(), x.T @ x, rtol=1e-5, atol=1e-4)


def test_reconstruct_skips_the_layers_an_update_prunes_nothing_new_in():
    model = one_layer(out_f=4, in_f=8)
    pruner = Pruner(model, criterion="wanda", reconstruct=True, start_step=0, target_step=4, stop_step=8,
                    frequency=4, target_sparsity=0.5, include=[r"^0$"])
    calls = []
    original = pruner.criterion.updated_weight
    pruner.criterion.updated_weight = lambda *args: calls.append(args[0]) or original(*args)
    model.train()
    for step in range(1, 9):
        model(torch.randn(3, 8))
        pruner.step(step)
    assert calls == ["0"]  # step 4 reached the target; step 8 kept the same mask, so no update was computed


def test_calibration_steps_count_only_the_forwards_just_before_each_update():
    model = one_layer(out_f=4, in_f=8)
    pruner = Pruner(model, criterion="wanda", calibration_steps=2, start_step=0, target_step=8, frequency=4,
                    include=[r"^0$"])
    model.train()
    seen = []
    for step in range(1, 9):
        model(torch.randn(3, 8))
        seen.append(pruner.criterion.tokens.get("0", 0))  # before pruner.step resets at an update
        pruner.step(step)
    # the updates at 4 and 8 counted the forwards of steps 3-4 and 7-8 only
    assert seen == [0, 0, 3, 6, 0, 0, 3, 6]


def test_wanda_hooks_go_at_finalize():
    model = one_layer(out_f=4, in_f=8)
    pruner = Pruner(model, criterion="wanda", start_step=0, target_step=8, frequency=4, include=[r"^0$"])
    assert len(model[0]._forward_pre_hooks) == 1
    pruner.finalize()
    assert not model[0]._forward_pre_hooks and not M.has_mask(model[0])


# --- patterns from each criterion ---------------------------------------------------------------------
def reference_scores(criterion, w, grads, inputs):
    if criterion == "obs":
        return explicit_obs_scores(w, grads.reshape(len(grads), -1), 8, 0.1)
    if criterion == "wanda":
        return wanda_scores(w, inputs)
    return w.abs().double()


@pytest.mark.parametrize("criterion", ["magnitude", "obs", "wanda"])
@pytest.mark.parametrize("pattern", ["unstructured", "block:2x4", "nm:2:4"])
def test_each_criterion_gives_unstructured_block_and_nm_masks_of_its_scores(criterion, pattern):
    model = one_layer(out_f=8, in_f=16, seed=3)
    extra = {"obs_num_grads": 2, "obs_block_size": 8, "obs_damp": 0.1} if criterion == "obs" else {}
    pruner = oneshot(model, at=2, criterion=criterion, pattern=pattern, **extra)
    w = out_in(pruner.layers["0"]).clone()
    grads, inputs = torch.randn(2, 8, 16), [torch.randn(6, 16).abs() * torch.linspace(0.1, 3, 16)]
    model.train()
    model(inputs[0])
    feed_gradients(pruner, grads)
    pruner.step(2)
    keep = M.get_mask(pruner.layers["0"])
    s = reference_scores(criterion, w, grads, inputs)
    slack = 1 + 1e-4  # fp32 scores against the fp64 reference
    if pattern == "unstructured":
        assert (~keep).sum() == 64 and s[~keep].max() <= s[keep].min() * slack
    elif pattern == "block:2x4":
        tiles = keep.view(4, 2, 4, 4).permute(0, 2, 1, 3).reshape(16, 8)
        tile_s = s.view(4, 2, 4, 4).mean(dim=(1, 3)).flatten()
        assert (tiles.all(-1) | ~tiles.any(-1)).all()  # whole tiles
        kept = tiles.all(-1)
        assert (~kept).sum() == 8 and tile_s[~kept].max() <= tile_s[kept].min() * slack
    else:
        groups, k = s.view(8, 4, 4), keep.view(8, 4, 4)
        assert (k.sum(-1) == 2).all()
        assert (groups[k].view(8, 4, 2).min(-1).values * slack >= groups[~k].view(8, 4, 2).max(-1).values).all()


def test_magnitude_is_the_default_and_prunes_exactly_the_smallest_weights():
    from tests.sparsity.test_pruner import bert

    model = bert()
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    default = Pruner(model, method="oneshot", target_sparsity=0.7, start_step=0)
    explicit = Pruner(bert(), method="oneshot", target_sparsity=0.7, start_step=0, criterion="magnitude")
    assert default.config.criterion == "magnitude"
    for name, mask in default.masks().items():
        order = torch.sort(weights[name].abs().flatten(), stable=True).indices  # a reference apart from topk
        reference = torch.ones(mask.numel(), dtype=torch.bool)
        reference[order[: round(0.7 * mask.numel())]] = False
        assert torch.equal(mask.flatten(), reference) and torch.equal(mask, explicit.masks()[name])


@pytest.mark.parametrize("bad", [dict(criterion="taylor"), dict(criterion="obs", pattern="structured"),
                                 dict(criterion="wanda", pattern="hybrid", ffn_sparsity=0.5, head_sparsity=0.5),
                                 dict(criterion="obs", method="lock"), dict(criterion="wanda", method="none"),
                                 dict(criterion="obs", obs_num_grads=8, frequency=4), dict(obs_block_size=0),
                                 dict(obs_damp=0.0), dict(obs_num_grads=0), dict(reconstruct=True),
                                 dict(criterion="obs", calibration_steps=2), dict(reconstruct_damp=0.0),
                                 dict(criterion="wanda", calibration_steps=0)])
def test_config_refuses_criteria_it_cannot_honour(bad):
    with pytest.raises(ValueError):
        PruningConfig(**bad)


def test_trainer_callback_observes_before_the_optimizer_step_of_the_coming_update():
    from types import SimpleNamespace

    from pruneofa import PruningCallback

    callback = PruningCallback(one_layer(out_f=4, in_f=8), criterion="obs", obs_num_grads=2, start_step=0,
                               target_step=8, frequency=4, include=[r"^0$"])
    M.original_weight(callback.pruner.layers["0"]).grad = torch.ones(4, 8)
    for global_step in (1, 2):  # updates 2 and 3: only 3 is in the window of the mask update at 4
        callback.on_pre_optimizer_step(None, SimpleNamespace(global_step=global_step), None)
    assert callback.pruner.criterion.observed == 1


# --- end to end -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("criterion,extra", [("obs", {"pruning.obs_num_grads": 2, "pruning.obs_block_size": 16,
                                                       "pruning.obs_update_weights": "true"}),
                                              ("wanda", {}),
                                              ("wanda", {"pruning.reconstruct": "true", "pruning.calibration_steps": 1})])
def test_prune_cli_with_each_criterion_reaches_the_target(criterion, extra, tiny_models, corpus_file, tmp_path, caplog):
    import json

    from pruneofa.cli import main
    from pruneofa.modeldir import inspect_dir
    from tests.conftest import tiny_overrides
    from tests.stages.test_lm_stages import PRUNE

    out = tmp_path / f"{criterion}{len(extra)}"
    overrides = {**PRUNE, "pruning.criterion": criterion, **extra}
    with caplog.at_level(logging.DEBUG, logger="pruneofa.sparsity.criteria"):
        assert main(["prune", *tiny_overrides(tiny_models["bert"], corpus_file, out, **overrides)]) == 0
    report = inspect_dir(out)
    assert all(s == pytest.approx(0.75, abs=0.02) for s in report["layers"].values())
    assert json.loads((out / "run.json").read_text())["pruning"]["criterion"] == criterion
    # the update at step 0 had nothing to go on (logged once); the ones at 2 and 4 used the criterion
    messages = [r.getMessage() for r in caplog.records]
    assert sum("magnitude scores for it" in m for m in messages) == 1
    used = [m for m in messages if m.startswith(f"criterion {criterion}: scores")]
    assert len(used) == 2 * 12 and (criterion != "obs" or all(m.endswith(" 2 steps") for m in used))
