from torch import nn

from pruneofa.sparsity.masks import plain_name
from pruneofa.sparsity.pruner import Pruner


def test_plain_name_maps_a_masked_weight_to_its_checkpoint_name():
    assert plain_name("bert.pooler.dense.parametrizations.weight.original") == "bert.pooler.dense.weight"
    assert plain_name("bert.pooler.dense.bias") == "bert.pooler.dense.bias"
    assert plain_name("classifier.weight") == "classifier.weight"


def test_plain_name_names_what_a_masked_model_checkpoints():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    plain = {name for name, _ in model.named_parameters()}
    Pruner(model, method="oneshot", target_sparsity=0.5, start_step=0, include=[r"^0$"])
    assert {plain_name(name) for name, _ in model.named_parameters()} == plain
