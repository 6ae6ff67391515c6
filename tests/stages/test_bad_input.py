"""Bad input: one line on stderr naming problem and fix, exit code 2, no output directory left."""

import pytest

from pruneofa.cli import main
from tests.conftest import save_tiny_model, tiny_overrides
from tests.stages.test_lm_stages import PRUNE


def expect_refusal(capsys, args, out, needle):
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not out.exists()


def test_missing_model_path(capsys, corpus_file, tmp_path):
    out = tmp_path / "o"
    expect_refusal(capsys, ["teacher", *tiny_overrides(tmp_path / "nope" / "model", corpus_file, out)], out, "does not exist")


def test_directory_that_is_not_a_model(capsys, corpus_file, tmp_path):
    out = tmp_path / "o"
    expect_refusal(capsys, ["teacher", *tiny_overrides(tmp_path, corpus_file, out)], out, "not a transformers model")


def test_teacher_with_another_vocabulary(capsys, tiny_models, corpus_file, tmp_path, tokenizer):
    import transformers

    other = tmp_path / "other"
    transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=1,
                                                          num_attention_heads=4, intermediate_size=64)).save_pretrained(other)
    out = tmp_path / "o"
    args = ["prune", *tiny_overrides(tiny_models["bert"], corpus_file, out, teacher=other, **PRUNE)]
    expect_refusal(capsys, args, out, "different vocabularies")


@pytest.mark.parametrize("content", ["", "\n\n   \n\n\n"])
def test_empty_or_blank_corpus(capsys, tiny_models, tmp_path, content):
    corpus = tmp_path / "blank.txt"
    corpus.write_text(content)
    out = tmp_path / "o"
    expect_refusal(capsys, ["teacher", *tiny_overrides(tiny_models["bert"], corpus, out)], out, "no text")


def test_corrupted_safetensors(capsys, tmp_path, corpus_file, tokenizer):
    model = save_tiny_model(tmp_path / "m", "bert", tokenizer)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "o"
    expect_refusal(capsys, ["teacher", *tiny_overrides(model, corpus_file, out)], out, "cannot load model")


def test_output_dir_holding_another_run_is_refused_unless_overwrite(capsys, tiny_models, corpus_file, tmp_path):
    out = tmp_path / "o"
    base = tiny_overrides(tiny_models["bert"], corpus_file, out, **{"train.max_steps": 2, "train.save_every": 0})
    assert main(["teacher", *base]) == 0
    capsys.readouterr()
    assert main(["teacher", *base]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["teacher", *base, "seed=7", "resume=true"]) == 2
    assert "different run" in capsys.readouterr().err
    assert (out / "pruneofa.json").is_file()  # the refused runs left the first one intact
    assert main(["teacher", *base, "seed=7", "overwrite=true"]) == 0


@pytest.mark.parametrize("stage", ["teacher", "prune"])
def test_length_grouping_is_refused_for_packed_lm_blocks(capsys, stage, tiny_models, corpus_file, tmp_path):
    out = tmp_path / "o"
    extra = {**(PRUNE if stage == "prune" else {}), "train.group_by_length": "true"}
    expect_refusal(capsys, [stage, *tiny_overrides(tiny_models["bert"], corpus_file, out, **extra)], out,
                   "train.group_by_length")
