"""Crash safety of a real `python -m pruneofa prune` process: SIGKILL at any moment, SIGTERM, resume.

The model is small but has the full MiniLM vocabulary, so a checkpoint (weights, masks, AdamW state)
is tens of MB and its write lasts long enough to be killed half-way.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from pruneofa.cli import main
from pruneofa.modeldir import inspect_dir
from pruneofa.train import checkpoint as C
from tests.conftest import SEQ, tiny_overrides

STEPS = 24
SCHEDULE = {"train.max_steps": STEPS, "train.save_every": 2, "train.keep_checkpoints": 2, "train.log_every": 1,
            "pruning.target_sparsity": 0.8, "pruning.target_step": 12, "pruning.stop_step": 16,
            "pruning.frequency": 2, "train.lr_schedule": "constant", "train.lr": 1e-3}


@pytest.fixture(scope="module")
def writable_model(tmp_path_factory, tokenizer) -> Path:
    path = tmp_path_factory.mktemp("crash") / "bert-128"
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=512, max_position_embeddings=SEQ * 2)
    transformers.BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def launch(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "pruneofa", "prune", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before the moment to interrupt it: "
                        f"{proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.002)


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def steps_done(out: Path) -> list[int]:
    return [s for s, _ in C.complete_checkpoints(out)]


def writes_in_progress(out: Path, after: int) -> list[Path]:
    root = C.checkpoint_root(out)
    try:
        return [p for p in root.iterdir() if p.name.endswith(".tmp") and int(p.name[5:-4]) > after
                and any(True for _ in p.iterdir())]
    except (FileNotFoundError, ValueError):  # renamed while we looked
        return []


def assert_latest_is_intact(out: Path) -> int:
    latest = C.latest_checkpoint(out)
    assert latest is not None
    state = C.read_state(latest)
    for name in ("model.safetensors", "masks.safetensors", "optimizer.safetensors", "rng-0.safetensors"):
        assert load_file(str(latest / name))  # complete and parseable
    json.loads((latest / "optimizer.json").read_text())
    pointer = C.checkpoint_root(out) / "latest"  # written just after the rename: absent or one behind is fine
    if pointer.exists():
        assert pointer.read_text().strip() in {p.name for _, p in C.complete_checkpoints(out)}  # never a missing one
    return state["step"]


@pytest.mark.slow
def test_sigkill_anywhere_and_sigterm_then_resume_to_the_target(writable_model, corpus_file, tmp_path):
    out = tmp_path / "run"
    args = tiny_overrides(writable_model, corpus_file, out, **SCHEDULE)

    # 1. SIGKILL as soon as the first checkpoint is complete (mid-training)
    proc = launch(args)
    wait_until(lambda: steps_done(out), proc)
    sigkill(proc)
    first = assert_latest_is_intact(out)

    # 2. resume and SIGKILL while a later checkpoint is being written (its step-N.tmp/ has files)
    caught = None
    for _ in range(3):  # the write lasts a fraction of a second: retry if the kill landed after its commit
        before = max(steps_done(out))
        proc = launch([*args, "resume=true"])
        wait_until(lambda: writes_in_progress(out, before), proc)
        sigkill(proc)
        caught = writes_in_progress(out, before)
        if caught:
            break
    assert caught, "never killed during a checkpoint write"
    assert not (caught[0].parent / caught[0].name.removesuffix(".tmp")).exists()  # half-written: not in place
    killed_at = assert_latest_is_intact(out)
    assert killed_at >= first

    # 3. resume, then SIGTERM: exit 130 after saving the step it stopped at; leftovers are cleaned
    proc = launch([*args, "resume=true"])
    wait_until(lambda: max(steps_done(out)) > killed_at, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    stopped = int(re.search(r"stopped at step (\d+)", err)[1])
    assert "resume=true" in err.strip().splitlines()[-1]
    assert assert_latest_is_intact(out) == stopped
    assert not list(C.checkpoint_root(out).glob("*.tmp"))  # step 2's half-written folder was removed

    # 4. resume to the end
    assert main(["prune", *args, "resume=true"]) == 0
    assert (C.checkpoint_root(out) / "latest").read_text().strip() == f"step-{STEPS}"
    history = json.loads((C.checkpoint_root(out) / f"step-{STEPS}" / "history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == list(range(1, STEPS + 1))  # no step lost or repeated
    assert inspect_dir(out)["overall"] == pytest.approx(0.8, abs=0.01)
    assert json.loads((out / "pruneofa.json").read_text())["stage"] == "prune"
    model = transformers.AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.vocab_size == transformers.AutoConfig.from_pretrained(writable_model).vocab_size
