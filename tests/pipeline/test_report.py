"""The report's reading of a run's training history: the checkpoint a resume would continue from."""

import json

from pruneofa.pipeline.report import training_history


def write_checkpoint(root, step, history, complete=True):
    path = root / "checkpoints" / f"step-{step}"
    path.mkdir(parents=True)
    (path / "history.json").write_text(json.dumps(history))
    if complete:
        (path / "state.json").write_text(json.dumps({"step": step}))


def test_history_comes_from_the_latest_complete_checkpoint(tmp_path):
    write_checkpoint(tmp_path, 2, [{"step": 2, "loss": 1.0}])
    write_checkpoint(tmp_path, 4, [{"step": 2, "loss": 1.0}, {"step": 4, "loss": 0.5}])
    write_checkpoint(tmp_path, 6, [{"step": 6, "loss": 9.9}], complete=False)  # a crash mid-save: no state.json
    (tmp_path / "checkpoints" / "latest").write_text("step-2")  # a stale pointer is not what resume follows
    assert training_history(tmp_path) == [{"step": 2, "loss": 1.0}, {"step": 4, "loss": 0.5}]


def test_a_run_without_checkpoints_has_no_history(tmp_path):
    assert training_history(tmp_path) == []
