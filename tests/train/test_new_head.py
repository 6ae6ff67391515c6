import pytest
from torch import nn

from pruneofa.train.new_head import fit_new_head


def test_fit_new_head_refuses_names_that_are_not_parameters():
    class Job:  # only the model is read before the check
        model = nn.Linear(2, 2)

    with pytest.raises(ValueError, match="none of"):
        fit_new_head(Job(), ["head.weight"], steps=1, lr=1e-3, what="new head")
    assert all(p.requires_grad for p in Job.model.parameters())
