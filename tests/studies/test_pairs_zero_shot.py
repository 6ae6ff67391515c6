"""studies/pairs_zero_shot.py: the threshold is fit on validation alone, and a real encoder dir gives every figure."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch


@pytest.fixture()
def script(import_study):
    return import_study("pairs_zero_shot")


def test_threshold_comes_from_validation_and_is_applied_to_test(script):
    val_scores, val_labels = torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])
    # the best validation threshold is 0.2 (score > 0.2 is positive): on test it misplaces the 0.5 negative
    val, test = script.threshold_accuracy(val_scores, val_labels, torch.tensor([0.15, 0.5, 0.85]),
                                          torch.tensor([0, 0, 1]))
    assert val == 1.0 and test == pytest.approx(2 / 3)


def write_pairs(path: Path, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    words = ["river", "piano", "castle", "orbit", "protein", "glacier", "senate", "violin"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["sentence1", "sentence2", "label"])
        for i in range(n):
            a, b = (int(j) for j in torch.randint(0, len(words), (2,), generator=g))
            out.writerow([f"The {words[a]} is old.", f"A {words[b]} was seen.", i % 2])


def test_every_figure_for_an_encoder_dir(script, tiny_models, tmp_path, capsys):
    write_pairs(tmp_path / "validation.csv", 12, 0)
    write_pairs(tmp_path / "test.csv", 10, 1)
    out = tmp_path / "zero_shot.json"
    assert script.main([str(tiny_models["bert"]), "--pairs-dir", str(tmp_path), "--max-seq-len", "16",
                        "--cls-pairs", "8", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    for key in ("mean_validation", "mean_test", "cls_validation", "cls_test"):
        assert 0.0 <= result[key] <= 1.0
    assert result["mean_validation"] >= 0.5  # the best threshold is never worse than calling every pair one label
    assert -1.0 <= result["cls_sameness"] <= 1.0
    assert f"| {tiny_models['bert']} |" in capsys.readouterr().out
