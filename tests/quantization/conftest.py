import pytest

from pruneofa import Pruner
from tests.quantization.helpers import tiny_bert


@pytest.fixture
def sparse_bert():
    """Tiny BERT pruned to 90% per layer, with the zero pattern locked as in sparse transfer."""
    model = tiny_bert()
    Pruner(model, method="oneshot", target_sparsity=0.9, start_step=0)
    pruner = Pruner(model, method="lock")
    return model, pruner
