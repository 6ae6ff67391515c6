"""Command steps (export, bench, eval) inside a pipeline: their options, and all-or-nothing output."""

import json

import pytest

from pruneofa.errors import UserError
from pruneofa.pipeline.commands import COMMANDS, run_command


def test_export_options_are_read_from_the_command_itself():
    options = COMMANDS["export"].options()
    assert {"model", "format", "dtype", "int8"} <= set(options) and "fmt" not in options and "model_dir" not in options


def test_export_step_writes_its_output_and_marker_atomically(tiny_models, tmp_path):
    out = tmp_path / "export-hf"
    assert run_command("export", None, {"model": tiny_models["bert"], "format": "hf", "output_dir": str(out)}) == out
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert json.loads((out / "export.json").read_text())["format"] == "hf"
    # re-made whole, over the finished one (what the runner asks when an input changed)
    run_command("export", None, {"model": tiny_models["bert"], "format": "compressed", "output_dir": str(out),
                                 "overwrite": True})
    assert json.loads((out / "export.json").read_text())["format"] == "compressed"
    assert [p.name for p in tmp_path.iterdir()] == ["export-hf"]


def test_failed_export_step_leaves_nothing_behind(tiny_models, tmp_path):
    out = tmp_path / "export-bad"
    with pytest.raises(UserError, match="unknown export format"):
        run_command("export", None, {"model": tiny_models["bert"], "format": "tflite", "output_dir": str(out)})
    assert list(tmp_path.iterdir()) == []
