"""Criteria under two gloo processes: each rank sees other gradients and inputs, yet the masks and the
OBS-updated weights end identical (rank 0's), and Wanda's input norms (and X^T X) are summed over the ranks."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pruneofa import Pruner
from pruneofa.sparsity import masks as M

SETUP = dict(method="oneshot", target_sparsity=0.5, include=[r"^0$"])


def layer(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 8, bias=False))


def obs_run(grads):
    pruner = Pruner(layer(), **SETUP, start_step=2, criterion="obs", obs_num_grads=2, obs_block_size=8,
                    obs_damp=0.1, obs_update_weights=True)
    module = pruner.layers["0"]
    for step, g in enumerate(grads, start=1):
        M.original_weight(module).grad = g.clone()
        pruner.observe_gradients(step)
    pruner.step(2)
    return module.weight.detach().clone(), pruner.masks()["0"]


def wanda_run(inputs, reconstruct=False):
    model = layer(1)
    pruner = Pruner(model, **SETUP, start_step=1, criterion="wanda", reconstruct=reconstruct)
    model.train()
    for x in inputs:
        model(x)
    pruner.step(1)
    return pruner.masks()["0"], pruner.layers["0"].weight.detach().clone()


def worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    gen = torch.Generator().manual_seed(10 + rank)  # every rank its own gradients and tokens
    grads, x = torch.randn(2, 8, 16, generator=gen), torch.randn(6, 16, generator=gen) * torch.linspace(0.1, 4, 16)
    weight, mask = obs_run(grads)
    result = {"grads": grads, "x": x, "weight": weight, "mask": mask, "wanda": wanda_run([x]),
              "reconstructed": wanda_run([x], reconstruct=True)}
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_agree_on_masks_and_obs_weights_and_wanda_pools_tokens(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["mask"], r1["mask"]) and torch.equal(r0["weight"], r1["weight"])
    alone1 = obs_run(r1["grads"])  # what rank 1 would have done by itself: not what it ended with
    assert not torch.equal(alone1[0], r1["weight"])
    weight, mask = obs_run(r0["grads"])  # rank 0 alone decides
    assert torch.equal(mask, r0["mask"])
    torch.testing.assert_close(weight, r0["weight"])
    assert torch.equal(r0["wanda"][0], r1["wanda"][0])
    assert torch.equal(r0["wanda"][0], wanda_run([r0["x"], r1["x"]])[0])  # the norms of both ranks' tokens
    # reconstruct: X^T X of both ranks' tokens, the same survivors everywhere
    both = wanda_run([r0["x"], r1["x"]], reconstruct=True)
    for rank in (r0, r1):
        assert torch.equal(rank["reconstructed"][0], both[0])
        torch.testing.assert_close(rank["reconstructed"][1], both[1])
    assert not torch.allclose(wanda_run([r1["x"]], reconstruct=True)[1], both[1])
