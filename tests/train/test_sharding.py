"""FSDP2 units (the multi-process behaviour is tests/distributed/test_fsdp.py)."""

import transformers

from pruneofa.train.sharding import units
from tests.conftest import tiny_config


def test_blocks_are_units_but_not_one_holding_a_tied_weight():
    bert = transformers.BertForMaskedLM(tiny_config("bert", 64))
    assert "BertEmbeddings" in bert._no_split_modules  # tied to the LM head: must stay with it, in the root unit
    assert [type(m).__name__ for m in units(bert)] == ["BertLayer", "BertLayer"]
    gpt2 = transformers.GPT2LMHeadModel(tiny_config("gpt2", 64))
    assert [type(m).__name__ for m in units(gpt2)] == ["GPT2Block", "GPT2Block"]
