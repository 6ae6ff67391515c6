"""FSDP2 (`train.sharding=fsdp`) under torchrun on CPU (gloo): the same masks as DDP, resume, two nodes."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from pruneofa.modeldir import inspect_dir
from pruneofa.train.checkpoint import mask_digest
from tests.conftest import tiny_overrides
from tests.distributed.test_ddp import PRUNE, torchrun

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def digests(ckpt):
    return {p.name: p.read_text().strip() for p in ckpt.glob("masks-rank*.sha256")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(*args):
    """`torchrun --nnodes 2` as docs/distributed.md gives it, both "nodes" on this machine."""
    torchrun_bin, port = shutil.which("torchrun", path=os.path.dirname(sys.executable)), free_port()
    nodes = [subprocess.Popen([torchrun_bin, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
                               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "pruneofa", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


@pytest.mark.slow
def test_fsdp_on_two_nodes_masks_equal_the_ddp_runs_and_resume_continues(tiny_models, corpus_file, tmp_path):
    def args(out, sharding, steps, **extra):
        # the target is reached at step 2, the masks still move until 4: the resume falls inside the schedule
        return tiny_overrides(tiny_models["bert"], corpus_file, out, **{
            **PRUNE, "pruning.target_step": 2, "pruning.stop_step": 4, "train.max_steps": steps, "train.sharding": sharding},
            **extra)

    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    done = torchrun("prune", *args(ddp, "none", 4))
    assert done.returncode == 0, done.stderr[-3000:]
    stdout = two_nodes("prune", *args(fsdp, "fsdp", 2))  # 2 updates as two 1-process "nodes"
    assert "prune: wrote" in stdout[0] and "prune: wrote" not in stdout[1]  # node 0's rank 0 alone writes
    done = torchrun("prune", *args(fsdp, "fsdp", 4, resume="true"))  # the shards reload the gathered checkpoint
    assert done.returncode == 0, done.stderr[-3000:]

    for step in (2, 4):  # same seed, same masks as DDP at every checkpoint, on every rank
        a, b = ddp / f"checkpoints/step-{step}", fsdp / f"checkpoints/step-{step}"
        assert set(digests(b)) == {"masks-rank0.sha256", "masks-rank1.sha256"}
        assert set(digests(b).values()) == {digests(a)["masks-rank0.sha256"]}
        assert mask_digest(load_file(str(b / "masks.safetensors"))) == digests(a)["masks-rank0.sha256"]
        # the same files with the same tensors (the optimizer state by parameter name, tied weights once)
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        for name in ("model.safetensors", "optimizer.safetensors"):
            wa, wb = load_file(str(a / name)), load_file(str(b / name))
            assert wa.keys() == wb.keys()
            for key in wa:
                torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)
    history = [json.loads((d / "checkpoints/step-4/history.json").read_text()) for d in (ddp, fsdp)]
    losses = [[(h["step"], h["loss"]) for h in run if "loss" in h] for run in history]
    assert [s for s, _ in losses[1]] == [1, 2, 3, 4]
    assert [loss for _, loss in losses[1]] == pytest.approx([loss for _, loss in losses[0]], rel=1e-4)
    # the final model is the plain, folded one
    final_ddp, final_fsdp = load_file(str(ddp / "model.safetensors")), load_file(str(fsdp / "model.safetensors"))
    assert final_ddp.keys() == final_fsdp.keys()
    assert all(torch.equal(final_ddp[k] == 0, final_fsdp[k] == 0) for k in final_ddp)
    assert inspect_dir(fsdp)["overall"] == pytest.approx(0.75, abs=0.01)
