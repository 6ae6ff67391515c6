"""The attention implementation the attention-KD term runs: the same model, and probabilities before dropout."""

import json

import pytest
import torch

from pruneofa.attention_probabilities import NAME, attention_returning_probabilities, return_attention_probabilities
from pruneofa.train.cpu_dropout import PackedDropout, packed_dropout
from tests.conftest import FAMILIES, padded_batch, tiny_lm


@pytest.mark.parametrize("family", FAMILIES)
def test_same_outputs_and_attention_distributions_before_dropout(family, tmp_path):
    model, inputs = tiny_lm(family).eval(), padded_batch()
    with torch.no_grad():
        default = model(**inputs).logits
        return_attention_probabilities(model)
        return_attention_probabilities(model)  # a second call changes nothing
        out = model(**inputs, output_attentions=True)
    assert model.config._attn_implementation == NAME
    torch.testing.assert_close(out.logits, default, rtol=1e-5, atol=1e-5)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 7, 7)
    model.train()  # dropout on: the returned distributions must still be whole
    out = model(**inputs, output_attentions=True)
    for a in out.attentions:
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 7))
        assert (a[1, :, :, -2:] == 0).all()  # padded keys
        if family != "gpt2":  # a causal model's future keys are 0 as well
            assert (a[:, :, :, :5] > 0).all()
    model.save_pretrained(tmp_path)
    assert NAME not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_dropout_still_applies_to_the_attention_output():
    model, inputs = tiny_lm("bert").train(), padded_batch()
    for name, module in model.named_modules():  # leave the attention-probability dropout alone
        if isinstance(module, torch.nn.Dropout) and not name.endswith("attention.self.dropout"):
            module.p = 0.0
    return_attention_probabilities(model)
    torch.manual_seed(1)
    first = model(**inputs).logits
    torch.manual_seed(2)
    second = model(**inputs).logits
    assert not torch.allclose(first, second)
    model.eval()
    assert torch.allclose(model(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("dropout_module, by_hand", [(torch.nn.Dropout, torch.nn.functional.dropout),
                                                     (PackedDropout, packed_dropout)])
def test_the_layers_own_dropout_module_drops_the_probabilities(dropout_module, by_hand):
    """The probabilities are dropped by the layer's own module, so train.cpu_dropout's packed masks reach
    the attention-KD path; the same seed gives the by-hand output, and the returned probabilities are whole."""
    layer = tiny_lm("bert").train().bert.encoder.layer[0].attention.self
    layer.dropout = dropout_module(0.5)
    query, key, value = (torch.randn(2, 4, 7, 8) for _ in range(3))
    torch.manual_seed(3)
    output, probabilities = attention_returning_probabilities(layer, query, key, value, None, dropout=0.5)
    torch.manual_seed(3)
    expected = torch.matmul(by_hand(probabilities, 0.5), value).transpose(1, 2)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(probabilities, torch.softmax(query @ key.transpose(-1, -2) / 8 ** 0.5, dim=-1))
    assert (output != torch.matmul(probabilities, value).transpose(1, 2)).any()  # something was dropped
