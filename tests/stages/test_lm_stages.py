"""End-to-end runs of `pruneofa teacher` and `pruneofa prune` on tiny random models of each family."""

import json
import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import load_file

from pruneofa.cli import main
from pruneofa.modeldir import inspect_dir
from tests.conftest import FAMILIES, tiny_overrides

PRUNE = {"pruning.target_sparsity": 0.75, "pruning.target_step": 4, "pruning.stop_step": 4, "pruning.frequency": 2}


def run(stage, *args):
    return main([stage, *args])


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_prune_each_family_reaches_target_and_reloads_without_pruneofa(family, tiny_models, corpus_file, tmp_path):
    out = tmp_path / "student"
    assert run("prune", *tiny_overrides(tiny_models[family], corpus_file, out, **PRUNE)) == 0
    report = inspect_dir(out)
    assert report["overall"] == pytest.approx(0.75, abs=0.01)
    assert all(s == pytest.approx(0.75, abs=0.02) for s in report["layers"].values())
    meta = json.loads((out / "pruneofa.json").read_text())
    assert meta["stage"] == "prune" and meta["objective"] == ("causal-lm" if family == "gpt2" else "masked-lm")
    assert meta["sparsity"]["overall"] == pytest.approx(report["overall"])
    assert (out / "metrics.json").is_file() and (out / "logs").is_dir()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-6"
    code = (f"import transformers; m = transformers.AutoModelFor{'CausalLM' if family == 'gpt2' else 'MaskedLM'}"
            f".from_pretrained(r'{out}'); print(sum(int((p == 0).sum()) for p in m.parameters()))")
    zeros = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1])
    assert zeros > 0


@pytest.mark.slow
def test_teacher_creates_the_missing_lm_head_and_trains_it(tiny_models, corpus_file, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "teacher"
    args = tiny_overrides(tiny_models["bert-headless"], corpus_file, out, **{"train.lr": 5e-3, "train.max_steps": 8,
                                                                             "train.save_every": 0})
    assert run("teacher", *args) == 0
    assert capsys.readouterr().err.count("corpus cache: ") == 1  # where the packed corpus is, once per run
    events = EventAccumulator(str(out / "logs")).Reload()
    speed = events.Scalars("progress/tokens_per_s")
    assert len(speed) == 8 and all(s.value > 0 for s in speed)
    assert [round(s.value, 6) for s in events.Scalars("progress/eta_minutes")][-1] == 0
    weights = load_file(str(out / "model.safetensors"))
    assert any(k.startswith("cls.predictions.transform.dense") for k in weights)
    model = transformers.AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.architectures == ["BertForMaskedLM"]
    history = json.loads((out / "checkpoints" / "step-8" / "history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])
    assert "eval_loss" in json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_models, corpus_file, tmp_path):
    # target reached at step 2, masks still moving until 4: the interruption at 3 falls inside the schedule
    schedule = {"pruning.target_step": 2, "pruning.stop_step": 4, "pruning.frequency": 1, "pruning.target_sparsity": 0.75,
                "train.lr_schedule": "constant", "train.lr": 1e-3}

    def args(out, steps, **extra):
        return tiny_overrides(tiny_models["bert"], corpus_file, out, **schedule, **{"train.max_steps": steps}, **extra)

    assert run("prune", *args(tmp_path / "full", 6)) == 0
    assert run("prune", *args(tmp_path / "part", 3)) == 0  # stops after step 3, checkpoint at 3
    assert run("prune", *args(tmp_path / "part", 6, resume="true")) == 0
    full = json.loads((tmp_path / "full/checkpoints/step-6/history.json").read_text())
    part = json.loads((tmp_path / "part/checkpoints/step-6/history.json").read_text())
    f_loss = [(h["step"], h["loss"], h["sparsity"]) for h in full if "loss" in h]
    p_loss = [(h["step"], h["loss"], h["sparsity"]) for h in part if "loss" in h]
    assert [s for s, _, _ in p_loss] == [1, 2, 3, 4, 5, 6]
    for (_, a, sa), (_, b, sb) in zip(f_loss, p_loss):
        assert a == pytest.approx(b, rel=1e-5) and sa == sb
    wa, wb = load_file(str(tmp_path / "full/model.safetensors")), load_file(str(tmp_path / "part/model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6)
        assert torch.equal(wa[key] == 0, wb[key] == 0)


@pytest.mark.slow
def test_inspect_cli_json(tiny_models, corpus_file, tmp_path, capsys):
    out = tmp_path / "s"
    assert run("prune", *tiny_overrides(tiny_models["distilbert"], corpus_file, out, **PRUNE)) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"overall", "layers"} and len(report["layers"]) == 2 * 6
    assert all("transformer.layer." in name for name in report["layers"])


def test_python_m_pruneofa_reports_bad_input_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pruneofa", "prune", "pruning.target_sparsity=1.5",
                           f"output_dir={tmp_path / 'o'}"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_prune_bert_with_representation_kd_alone_from_a_deeper_teacher(tiny_models, corpus_file, tokenizer, tmp_path):
    """The cheap recipe: no logit KD, hidden-state and attention KD from a teacher of 4 layers into 2."""
    from pruneofa.attention_probabilities import NAME
    from tests.conftest import tiny_config

    teacher = tmp_path / "teacher-4-layers"
    config = tiny_config("bert", len(tokenizer))
    config.num_hidden_layers = 4
    torch.manual_seed(1)
    transformers.AutoModelForMaskedLM.from_config(config).save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    out = tmp_path / "student"
    kd = {"teacher": teacher, "distill.alpha_kd": 0, "distill.alpha_hidden": 1, "distill.alpha_attention": 1}
    assert run("prune", *tiny_overrides(tiny_models["bert"], corpus_file, out, **PRUNE, **kd)) == 0
    history = json.loads((out / "checkpoints" / "step-6" / "history.json").read_text())
    steps = [h for h in history if "loss" in h]
    assert len(steps) == 6
    for h in steps:
        assert "kd" not in h and 0 < h["hidden"] < 10 and 0 < h["attention"] < 10, h
        assert h["loss"] == pytest.approx(0.5 * h["ce"] + h["hidden"] + h["attention"], rel=1e-4)
    assert inspect_dir(out)["overall"] == pytest.approx(0.75, abs=0.01)
    assert NAME not in (out / "config.json").read_text()  # the saved student loads with the default attention
