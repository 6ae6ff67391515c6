"""studies/teacher_calibration.py: masked least squares toward the teacher's layer outputs keeps the zeros and
brings the layers' outputs, and the encoder's, closer to the teacher's than the student it started from."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers


@pytest.fixture()
def script(import_study):
    return import_study("teacher_calibration")


def pruned_pair() -> tuple[torch.nn.Module, torch.nn.Module, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    teacher = transformers.BertModel(config).eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for module in student.encoder.modules():
            if isinstance(module, torch.nn.Linear):  # half of each matrix pruned by |w|, the rest nudged
                module.weight.mul_(module.weight.abs() > module.weight.abs().median())
                module.weight.mul_(1 + 0.1 * torch.randn_like(module.weight))
    ids = torch.randint(1, 50, (8, 12))
    mask = torch.ones_like(ids)
    mask[:4, 9:] = 0  # padding the fit must leave out
    return student, teacher, [{"input_ids": ids, "attention_mask": mask}]


def test_fit_keeps_zeros_and_moves_each_layer_toward_the_teacher(script):
    student, teacher, batches = pruned_pair()
    zeros = {n: m.weight == 0 for n, m in student.encoder.named_modules() if isinstance(m, torch.nn.Linear)}
    with torch.no_grad():
        drift_before = (student(**batches[0]).last_hidden_state - teacher(**batches[0]).last_hidden_state).norm()
    errors = script.calibrate(student, teacher, batches, target="teacher", damp=0.01)
    assert len(errors) == 2 * 6
    # the column-wise masked update is greedy, so a single layer may not improve: the sum must
    assert sum(after for _, _, after in errors) < sum(before for _, before, _ in errors)
    for name, module in student.encoder.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert torch.equal(module.weight == 0, zeros[name])  # exactly the same zero pattern
    with torch.no_grad():
        drift_after = (student(**batches[0]).last_hidden_state - teacher(**batches[0]).last_hidden_state).norm()
    assert drift_after < drift_before


def test_self_target_with_nothing_pruned_is_the_identity(script):
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 3)
    x = torch.randn(64, 6, dtype=torch.float64)
    goal = x @ layer.weight.double().T + layer.bias.double()
    weight, bias = layer.weight.clone(), layer.bias.clone()
    script.fit_layer(layer, x, goal, damp=1e-9)
    assert torch.allclose(layer.weight, weight, atol=1e-5) and torch.allclose(layer.bias, bias, atol=1e-5)
