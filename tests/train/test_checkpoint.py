"""Atomic checkpoints: commit, latest, keep, leftovers of a crash, damaged files, and stop/resume in fit()."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import transformers

from pruneofa.cli import main
from pruneofa.errors import UserError
from pruneofa.sparsity.config import PruningConfig
from pruneofa.sparsity.pruner import Pruner
from pruneofa.train import checkpoint as C
from pruneofa.train.config import TrainConfig
from pruneofa.train.loop import StopRequested, TrainingJob, fit
from tests.conftest import tiny_config, tiny_overrides


def commit(out: Path, step: int, keep: int = 2, payload: str = "x") -> Path:
    tmp = C.begin_checkpoint(out, step)
    C.save_tensors(tmp / "model.safetensors", {"w": torch.full((3,), float(step))})
    (tmp / "payload.txt").write_text(payload)
    return C.commit_checkpoint(tmp, {"step": step}, keep)


def test_commit_renames_into_place_updates_latest_and_keeps_the_newest(tmp_path):
    for step in (2, 4, 6):
        final = commit(tmp_path, step)
        assert final.name == f"step-{step}" and (final / "state.json").is_file()
        assert not final.with_name(f"step-{step}.tmp").exists()
    root = C.checkpoint_root(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-4", "step-6"]
    assert (root / "latest").read_text() == "step-6\n"
    assert C.latest_checkpoint(tmp_path) == root / "step-6"
    assert C.read_state(root / "step-6") == {"step": 6}


def test_the_same_step_saved_twice_is_replaced_whole(tmp_path):
    commit(tmp_path, 4, payload="first")
    final = commit(tmp_path, 4, payload="second")
    assert (final / "payload.txt").read_text() == "second"
    assert sorted(p.name for p in C.checkpoint_root(tmp_path).iterdir()) == ["latest", "step-4"]


def test_leftovers_of_a_crashed_write_are_ignored_then_cleaned(tmp_path):
    commit(tmp_path, 2)
    root = C.checkpoint_root(tmp_path)
    half = root / "step-4.tmp"  # killed during the write: even a state.json inside does not make it count
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x00" * 10)
    (half / "state.json").write_text('{"step": 4}')
    trash = root / ".trash-step-1-123"  # killed while deleting an old checkpoint
    trash.mkdir()
    (trash / "state.json").write_text('{"step": 1}')
    (root / ".latest.tmp-999").write_text("step-4\n")  # killed while replacing `latest`
    no_state = root / "step-8"  # a folder without state.json is never a checkpoint
    no_state.mkdir()

    assert C.latest_checkpoint(tmp_path) == root / "step-2"
    assert [s for s, _ in C.complete_checkpoints(tmp_path)] == [2]
    removed = {p.name for p in C.clean_partial(tmp_path)}
    assert removed == {"step-4.tmp", ".trash-step-1-123", ".latest.tmp-999"}
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-2", "step-8"]
    assert commit(tmp_path, 4).name == "step-4"  # and the step can be written again


def test_damaged_files_raise_user_errors_that_name_file_and_fix(tmp_path):
    final = commit(tmp_path, 2)
    weights = final / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(UserError, match="corrupted or truncated safetensors file") as err:
        C.load_tensors(weights)
    assert str(weights) in str(err.value) and f"delete {final}" in str(err.value) and "\n" not in str(err.value)
    (final / "state.json").write_text('{"ste')
    with pytest.raises(UserError, match="unreadable checkpoint file"):
        C.read_state(final)
    (final / "state.json").write_text('{"epoch": 1}')
    with pytest.raises(UserError, match="has no step"):
        C.read_state(final)


def test_mask_digest_is_equal_for_equal_masks_only(tmp_path):
    a = {"l1": torch.tensor([[True, False]]), "l2": torch.ones(2, 2, dtype=torch.bool)}
    b = {k: v.clone() for k, v in reversed(a.items())}
    assert C.mask_digest(a) == C.mask_digest(b)
    b["l1"][0, 1] = True
    assert C.mask_digest(a) != C.mask_digest(b)
    (tmp_path / "masks-rank0.sha256").write_text(C.mask_digest(a))
    (tmp_path / "masks-rank1.sha256").write_text(C.mask_digest(b))
    with pytest.raises(RuntimeError, match="masks differ between processes"):
        C.check_mask_digests(tmp_path)


# --- fit(): stop on a signal, resume ------------------------------------------------------------
def tiny_job(out: Path, resume: bool = False, extra_logs=None) -> TrainingJob:
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(tiny_config("bert", 64))
    pruner = Pruner(model, PruningConfig(target_sparsity=0.5, target_step=4, frequency=1))
    data = torch.randint(5, 64, (32, 16), generator=torch.Generator().manual_seed(0))

    def make_batch(idx):
        x = data[idx]
        return {"input_ids": x, "labels": x, "attention_mask": torch.ones_like(x)}

    cfg = TrainConfig(max_steps=6, batch_size=4, seq_len=16, log_every=1, warmup_steps=0, save_every=0)
    return TrainingJob(model=model, n_examples=len(data), make_batch=make_batch,
                       compute_loss=lambda m, t, b: {"loss": m(**b).loss}, lr_at=lambda s: 1e-3, config=cfg,
                       output_dir=out, pruner=pruner, resume=resume, extra_logs=extra_logs)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_saving_that_step_and_resume_finishes(tmp_path, sig):
    def interrupt(step):
        if step == 3:
            os.kill(os.getpid(), sig)  # handled between updates: the loop saves step 3 and stops
        return {}

    previous = signal.getsignal(sig)
    with pytest.raises(StopRequested) as stop:
        fit(tiny_job(tmp_path, extra_logs=interrupt))
    assert signal.getsignal(sig) is previous  # the handler is put back
    assert stop.value.step == 3 and stop.value.checkpoint == C.checkpoint_root(tmp_path) / "step-3"
    assert C.read_state(stop.value.checkpoint)["step"] == 3
    result = fit(tiny_job(tmp_path, resume=True))
    assert result.step == 6
    assert [h["step"] for h in result.history if "loss" in h] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_resuming_from_a_truncated_checkpoint_names_it_and_the_fix(capsys, tiny_models, corpus_file, tmp_path):
    out = tmp_path / "o"
    args = tiny_overrides(tiny_models["bert"], corpus_file, out, **{"train.max_steps": 4, "train.save_every": 2,
                                                                    "pruning.target_step": 2})
    assert main(["prune", *args]) == 0
    latest = C.checkpoint_root(out) / "step-4"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    capsys.readouterr()
    resumed = [a for a in args if not a.startswith("train.max_steps")] + ["train.max_steps=6", "resume=true"]
    assert main(["prune", *resumed]) == 2
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]  # after the progress bars
    assert err.startswith("error: corrupted or truncated safetensors file")
    assert str(weights) in err and f"delete {latest}" in err
    # the fix the message names works: the run continues from the checkpoint before
    import shutil

    shutil.rmtree(latest)
    assert main(["prune", *resumed]) == 0
    history = json.loads((C.checkpoint_root(out) / "step-6" / "history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4, 5, 6]
