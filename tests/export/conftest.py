import pytest

from tests.export.helpers import prune, qat_train, tiny_bert


@pytest.fixture
def sparse_qat_bert():
    """Tiny BERT, 90% sparse with the pattern locked, trained 3 QAT steps (per-tensor scales)."""
    model = tiny_bert()
    pruner = prune(model)
    return qat_train(model), pruner
