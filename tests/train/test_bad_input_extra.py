"""Bad input not covered in tests/stages/test_bad_input.py and tests/config/test_recipes.py, through the CLI:
one line naming problem and fix, exit code 2, no output directory written."""

import pytest

from pruneofa.cli import main
from tests.conftest import save_tiny_model, tiny_overrides
from tests.stages.test_bad_input import expect_refusal


@pytest.mark.parametrize("override,needle", [
    ("pruning.target_sparsity=-0.1", "pruning.target_sparsity"),                      # outside [0, 1)
    ("pruning.target_sparsity=1", "pruning.target_sparsity"),
    ("pruning.start_step=5", "must come after pruning.start_step (5)"),               # end before begin
    ("pruning.stop_step=2", "pruning.stop_step (2) must not come before"),
    ("pruning.pattern=nm:0:4", "nm:0:4"),                                              # malformed patterns
    ("pruning.pattern=block:4x0", "block:4x0"),
    ("pruning.pattern=diagonal", "diagonal"),
    ("nonsense=1", "unknown recipe key 'nonsense'"),                                   # unknown key, top level
    ("distill.alpha_kd=lots", "distill.alpha_kd"),                                     # wrong types
    ("resume=maybe", "resume"),
    ("train.batch_size=[1,2]", "train.batch_size"),
])
def test_bad_recipe_values_are_refused_before_anything_is_written(capsys, corpus_file, tmp_path, override, needle):
    out = tmp_path / "o"
    args = tiny_overrides(tmp_path / "unused-model", corpus_file, out, **{"pruning.target_step": 4})
    expect_refusal(capsys, ["prune", *args, override], out, needle)


def test_missing_teacher(capsys, tiny_models, corpus_file, tmp_path):
    out = tmp_path / "o"
    args = tiny_overrides(tiny_models["bert"], corpus_file, out, teacher=tmp_path / "no-teacher",
                          **{"pruning.target_step": 4})
    expect_refusal(capsys, ["prune", *args], out, "does not exist")


def test_truncated_teacher_weights(capsys, tiny_models, corpus_file, tmp_path, tokenizer):
    teacher = save_tiny_model(tmp_path / "t", "bert", tokenizer)
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "o"
    args = tiny_overrides(tiny_models["bert"], corpus_file, out, teacher=teacher, **{"pruning.target_step": 4})
    expect_refusal(capsys, ["prune", *args], out, "cannot load model")


@pytest.mark.parametrize("flag", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharded_launches_are_refused_before_the_output_dir_is_claimed(capsys, monkeypatch, tiny_models, corpus_file,
                                                                       tmp_path, flag):
    monkeypatch.setenv(flag, "true")
    out = tmp_path / "o"
    args = tiny_overrides(tiny_models["bert"], corpus_file, out, **{"pruning.target_step": 4})
    capsys.readouterr()
    assert main(["prune", *args]) == 2
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert err.startswith("error: ") and "not supported" in err and "torchrun" in err
    assert not out.exists()
