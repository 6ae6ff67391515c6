import pytest
import torch
from torch import nn

from pruneofa.sparsity.pruner import Pruner
from pruneofa.train.new_head import fit_new_head, plain_name


def test_plain_name_maps_a_masked_weight_to_its_checkpoint_name():
    assert plain_name("bert.pooler.dense.parametrizations.weight.original") == "bert.pooler.dense.weight"
    assert plain_name("bert.pooler.dense.bias") == "bert.pooler.dense.bias"
    assert plain_name("classifier.weight") == "classifier.weight"


def test_plain_name_names_what_a_masked_model_checkpoints():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    plain = {name for name, _ in model.named_parameters()}
    Pruner(model, method="oneshot", target_sparsity=0.5, start_step=0, include=[r"^0$"])
    assert {plain_name(name) for name, _ in model.named_parameters()} == plain


def test_fit_new_head_refuses_names_that_are_not_parameters():
    class Job:  # only the model is read before the check
        model = nn.Linear(2, 2)

    with pytest.raises(ValueError, match="none of"):
        fit_new_head(Job(), ["head.weight"], steps=1, lr=1e-3, what="new head")
    assert all(p.requires_grad for p in Job.model.parameters())
