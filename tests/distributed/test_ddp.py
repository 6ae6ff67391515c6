"""Two CPU processes under torchrun (DDP over gloo): one writer, identical masks, resume, target sparsity."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from pruneofa.modeldir import inspect_dir
from pruneofa.train.checkpoint import mask_digest
from tests.conftest import SEQ, tiny_overrides

PRUNE = {"pruning.target_sparsity": 0.75, "pruning.target_step": 4, "pruning.stop_step": 6, "pruning.frequency": 1,
         "train.batch_size": 8, "train.save_every": 2, "train.keep_checkpoints": 5}


def torchrun(*args, nproc=2):
    torchrun_bin = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun_bin, "--nproc_per_node", str(nproc), "--standalone", "-m", "pruneofa", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_two_processes_prune_resume_and_agree_on_masks(tiny_models, corpus_file, tmp_path):
    out = tmp_path / "ddp"
    # 4 of 8 updates, then a resume under 2 processes again for the rest
    first = torchrun("prune", *tiny_overrides(tiny_models["bert"], corpus_file, out, **PRUNE, **{"train.max_steps": 4}))
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("prune: wrote") >= 1
    run = json.loads((out / "run.json").read_text())
    assert run["train"]["max_steps"] == 4
    state = json.loads((out / "checkpoints/step-4/state.json").read_text())
    assert state == {"step": 4, "world_size": 2, "tokens": 4 * 8 * SEQ}  # packed blocks, added over both ranks

    second = torchrun("prune", *tiny_overrides(tiny_models["bert"], corpus_file, out, **PRUNE,
                                               **{"train.max_steps": 8, "resume": "true"}))
    assert second.returncode == 0, second.stderr[-3000:]

    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-2", "step-4", "step-6", "step-8"]
    for step in (2, 4, 6, 8):  # every checkpoint: each rank's mask hash, all equal, and equal to the saved masks
        ckpt = ckpts / f"step-{step}"
        digests = {p.name: p.read_text().strip() for p in ckpt.glob("masks-rank*.sha256")}
        assert set(digests) == {"masks-rank0.sha256", "masks-rank1.sha256"}
        assert len(set(digests.values())) == 1, digests
        assert mask_digest(load_file(str(ckpt / "masks.safetensors"))) == digests["masks-rank0.sha256"]
        assert {p.name for p in ckpt.glob("rng-*.safetensors")} == {"rng-0.safetensors", "rng-1.safetensors"}

    # one writer: one TensorBoard event file per launch, a history without duplicated steps
    assert len(list((out / "logs").glob("events.out.tfevents.*"))) == 2
    history = json.loads((ckpts / "step-8" / "history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == list(range(1, 9))
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))

    report = inspect_dir(out)
    assert report["overall"] == pytest.approx(0.75, abs=0.01)
    meta = json.loads((out / "pruneofa.json").read_text())
    assert meta["sparsity"]["overall"] == pytest.approx(report["overall"])


@pytest.mark.slow
def test_two_processes_run_the_span_sentence_term_as_a_second_forward(tiny_models, corpus_file, tmp_path):
    # the spans go through the DDP-wrapped student a second time before the one backward
    out = tmp_path / "ddp-spans"
    spans = {"train.max_steps": 4, "distill.alpha_sentence": 1.0, "distill.sentence_inputs": "spans",
             "distill.span_tokens": "[2,6]"}
    run = torchrun("prune", *tiny_overrides(tiny_models["bert"], corpus_file, out, **PRUNE, **spans))
    assert run.returncode == 0, run.stderr[-3000:]
    history = json.loads((out / "checkpoints/step-4/history.json").read_text())
    assert [h["sentence"] > 0 for h in history if "loss" in h] == [True] * 4
