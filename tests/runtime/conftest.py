"""Tiny pruned BERTs shared by the runtime tests (built once per session: a few hundred ms)."""

from __future__ import annotations

import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*quantiz.*")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test draws the same random inputs whatever ran before it in its worker (pytest -n shares
    one process between tests): int8 error bounds on a few values (one token x 7 outputs) otherwise
    depend on the test order."""
    torch.manual_seed(0)


def tiny_bert(sparsity: float = 0.9, pattern: str = "unstructured", seed: int = 0, cls=None):
    from transformers import BertConfig, BertModel

    from pruneofa import Pruner

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=160, max_position_embeddings=64, num_labels=3)
    model = (cls or BertModel)(config).eval()
    if sparsity:
        Pruner(model, method="oneshot", target_sparsity=sparsity, start_step=0, pattern=pattern).finalize()
    return model


def tiny_gpt2(sparsity: float = 0.9):
    """A GPT2LMHeadModel (2 x 64, 500 tokens) pruned per layer. Weights of std 0.3, so that greedy decoding
    gives a varied sequence rather than one token repeated (at GPT-2's 0.02 it settles at once)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from pruneofa import Pruner

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=500, n_embd=64, n_layer=2, n_head=4, n_positions=64, initializer_range=0.3,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    Pruner(model, method="oneshot", target_sparsity=sparsity, start_step=0).finalize()
    return model


@pytest.fixture(scope="session")
def pruned_bert():
    return tiny_bert()


@pytest.fixture(scope="session")
def inputs():
    torch.manual_seed(1)
    ids = torch.randint(5, 500, (2, 24))
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0  # a padded second sequence exercises the attention mask
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))


def reference(model, inputs):
    with torch.no_grad():
        return model(**inputs)
