"""The direct GPT-2 path of the sparse engines (`fused_decoder.FusedGPT2`): the calls of prefill and `generate`
skip transformers' GPT2Model forward and give its results; every other call runs that forward."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

import pruneofa.runtime as rt
from pruneofa.runtime.fused_decoder import FusedGPT2, unfuse_decoders

from .conftest import tiny_gpt2

GREEDY = dict(max_new_tokens=16, do_sample=False, pad_token_id=0)


@pytest.fixture(scope="module")
def pruned_gpt2():
    return tiny_gpt2()


@pytest.fixture
def sparse(pruned_gpt2):
    """The fp32 sparse engine (exact up to summation order) and a spy on transformers' GPT2Model forward."""
    m = rt.load(pruned_gpt2, engine="sparse")
    fused = m.model.transformer
    assert isinstance(fused, FusedGPT2) and m.report.fused_decoders == 1
    assert "1 direct GPT-2 decoder(s)" in m.report.summary()
    calls = []
    original_forward = fused.original.forward

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original_forward(*args, **kwargs)

    fused.original.forward = spy  # an instance attribute: the module's __call__ finds it first
    return m, calls


def transformers_logits(m, **inputs):
    """The same converted model through transformers' GPT2Model forward: the direct path's reference."""
    fused = m.model.transformer
    unfuse_decoders(m.model)
    assert m.model.transformer is fused.original
    try:
        return m(**inputs)
    finally:
        m.model.transformer = fused


def test_generate_takes_the_direct_path_and_gives_pytorchs_greedy_tokens(pruned_gpt2, sparse):
    m, calls = sparse
    prompt = torch.randint(1, 500, (1, 8), generator=torch.Generator().manual_seed(0))
    expected = pruned_gpt2.generate(prompt, **GREEDY)
    assert len(set(expected[0, 8:].tolist())) >= 8  # a varied sequence: identical degenerate outputs prove nothing
    torch.testing.assert_close(m.generate(prompt, **GREEDY), expected, rtol=0, atol=0)
    assert calls == []  # prefill and every decode step: none went through transformers' forward


@pytest.mark.parametrize("past, new, batch", [(0, 6, 1), (6, 1, 1), (6, 3, 1), (5, 1, 2)],
                         ids=["prefill", "decode", "chunk-after-cache", "batch-2"])
def test_logits_and_cache_match_transformers_forward(sparse, past, new, batch):
    m, calls = sparse
    ids = torch.randint(1, 500, (batch, past + new), generator=torch.Generator().manual_seed(2))
    caches = [DynamicCache(config=m.model.config) for _ in range(2)]
    if past:
        for cache in caches:
            m(input_ids=ids[:, :past], cache=cache, use_cache=True)
    mask = torch.ones_like(ids)  # generate's all-ones mask stays on the direct path
    out = m(input_ids=ids[:, past:], attention_mask=mask, cache=caches[0], use_cache=True)
    assert calls == []
    reference = transformers_logits(m, input_ids=ids[:, past:], attention_mask=mask, cache=caches[1], use_cache=True)
    torch.testing.assert_close(out.logits, reference.logits, rtol=1e-5, atol=1e-5)
    assert caches[0].get_seq_length() == caches[1].get_seq_length() == past + new
    torch.testing.assert_close(caches[0].layers[1].values, caches[1].layers[1].values, rtol=1e-5, atol=1e-5)


def test_calls_it_does_not_cover_run_transformers_forward(sparse):
    m, calls = sparse
    ids = torch.randint(1, 500, (2, 6), generator=torch.Generator().manual_seed(3))
    padded = torch.ones_like(ids)
    padded[1, :2] = 0  # left padding: transformers' masks
    out = m(input_ids=ids, attention_mask=padded)
    m(input_ids=ids, output_hidden_states=True)
    m(input_ids=ids, position_ids=torch.arange(1, 7).expand(2, 6))  # positions the cache does not imply
    m(input_ids=ids, cache=DynamicCache(config=m.model.config), use_cache=False)  # a cache it is told not to keep
    assert len(calls) == 4
    m(input_ids=ids, position_ids=torch.arange(6).expand(2, 6))  # the implied ones (what generate passes)
    assert len(calls) == 4
    torch.testing.assert_close(out.logits, transformers_logits(m, input_ids=ids, attention_mask=padded).logits)
    assert m.model.transformer.h is m.model.transformer.original.h  # the GPT2Model's attributes read through


@pytest.mark.parametrize("engine", ["sparse", "sparse-int8"])
def test_the_kernels_take_over_the_gelu_and_the_residual_layer_norms(pruned_gpt2, engine):
    """GPT-2's tanh GELU becomes c_fc's epilogue (the `act` module an Identity, for transformers' forward too),
    and on the direct path each c_proj adds its residual and applies the next LayerNorm in its own call:
    the logits stay those of transformers' forward over the same kernels (int8: a LayerNorm computed in
    another order could move an activation across a rounding boundary of its quantisation)."""
    from torch import nn

    m = rt.load(pruned_gpt2, engine=engine)
    fused = [layer for layer in m.report.layers if layer.fused_act]
    assert [layer.name for layer in fused] == [f"transformer.h.{i}.mlp.c_fc" for i in range(2)]
    assert {layer.fused_act for layer in fused} == {"gelu_tanh"}
    assert all(isinstance(block.mlp.act, nn.Identity) for block in m.model.transformer.h)
    ids = torch.randint(1, 500, (1, 9), generator=torch.Generator().manual_seed(4))
    caches = [DynamicCache(config=m.model.config) for _ in range(2)]
    m(input_ids=ids[:, :8], cache=caches[0], use_cache=True)
    direct = m(input_ids=ids[:, 8:], cache=caches[0], use_cache=True).logits
    transformers_logits(m, input_ids=ids[:, :8], cache=caches[1], use_cache=True)
    reference = transformers_logits(m, input_ids=ids[:, 8:], cache=caches[1], use_cache=True).logits
    # measured: 2e-7 (fp32), 0 (int8: the same bits here); against PyTorch's fp32 model 4e-7 and 2.1e-2
    assert float((direct - reference).norm() / reference.norm()) < (1e-5 if engine == "sparse" else 1e-3)
    with torch.no_grad():
        torch_logits = pruned_gpt2(input_ids=ids).logits[:, 8:]
    assert float((direct - torch_logits).norm() / torch_logits.norm()) < (1e-5 if engine == "sparse" else 5e-2)


def test_decode_steps_write_the_cache_in_place_and_survive_crops_and_beams(pruned_gpt2, sparse):
    """The cache's layers grow in spare room: a decode step adds its token without copying the cache (the keys
    of consecutive steps share storage) and holds what transformers' concatenation would; after a crop the next
    step overwrites the cropped tail and gives the logits of a cache that never held it; beam search (which
    reorders the cache) gives PyTorch's beams."""
    from pruneofa.runtime.fused_decoder import GrowingLayer

    m, calls = sparse
    ids = torch.randint(1, 500, (1, 12), generator=torch.Generator().manual_seed(5))
    cache = DynamicCache(config=m.model.config)
    m(input_ids=ids[:, :8], cache=cache, use_cache=True)
    assert all(type(layer) is GrowingLayer for layer in cache.layers)
    storage = cache.layers[0].keys.data_ptr()
    logits = [m(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True).logits for t in range(8, 12)]
    assert cache.layers[0].keys.data_ptr() == storage and cache.get_seq_length() == 12
    with torch.no_grad():
        reference = pruned_gpt2(input_ids=ids, use_cache=True)
    torch.testing.assert_close(torch.cat(logits, 1), reference.logits[:, 8:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache.layers[1].values, reference.cache.layers[1].values, rtol=1e-5, atol=1e-5)
    cache.crop(-3)  # back to 9 tokens; a different 10th token now
    other = torch.tensor([[7]])
    after_crop = m(input_ids=other, cache=cache, use_cache=True).logits
    with torch.no_grad():
        fresh = pruned_gpt2(input_ids=torch.cat([ids[:, :9], other], 1)).logits[:, -1:]
    torch.testing.assert_close(after_crop, fresh, rtol=1e-5, atol=1e-5)
    beams = dict(max_new_tokens=8, num_beams=3, do_sample=False, pad_token_id=0)
    expected = pruned_gpt2.generate(ids[:, :6], **beams)
    torch.testing.assert_close(m.generate(ids[:, :6], **beams), expected, rtol=0, atol=0)
    assert calls == []
