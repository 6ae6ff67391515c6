"""Packed CPU dropout: the rate and expectation of torch's dropout, attention that matches SDPA's, a model swapped
whole and left as it was in evaluation."""

import json
import types

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from pruneofa.train.cpu_dropout import (
    ATTENTION,
    PackedDropout,
    attention_with_packed_dropout,
    keep_mask,
    packed_dropout,
    quantised_rate,
    use_packed_dropout,
)
from tests.conftest import ENCODER_FAMILIES, FAMILIES, padded_batch, tiny_lm

VOCAB = 50
TINY_RATE = 1e-7  # not 0, so attention takes the packed path; quantised to 0, so nothing is dropped


def test_quantised_rate_is_the_nearest_sixteenth_bit():
    assert quantised_rate(0.1) == 6554 / 65536
    assert quantised_rate(0.0) == 0.0 and quantised_rate(TINY_RATE) == 0.0 and quantised_rate(1.0) == 1.0


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_drops_at_the_quantised_rate(p):
    torch.manual_seed(0)
    n = 1 << 20
    dropped = 1.0 - keep_mask((n,), p).float().mean().item()
    assert abs(dropped - quantised_rate(p)) < 4 * (p * (1 - p) / n) ** 0.5  # four standard errors
    assert keep_mask((3, 5, 7), p).shape == (3, 5, 7)  # sizes that are not multiples of 4


def test_packed_dropout_keeps_the_expectation_and_is_seeded():
    x = torch.full((1 << 20,), 2.0)
    torch.manual_seed(3)
    out = packed_dropout(x, 0.1)
    kept = out != 0
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 2.0 / (1 - quantised_rate(0.1))))
    assert abs(out.mean().item() - 2.0) < 0.01
    torch.manual_seed(3)
    assert torch.equal(packed_dropout(x, 0.1), out)
    assert torch.equal(packed_dropout(x, 0.0), x) and not packed_dropout(x, 1.0).any()


def test_packed_dropout_module_keeps_p_and_evaluates_as_identity():
    module = PackedDropout(0.1)
    x = torch.randn(4, 8)
    assert module.p == 0.1 and torch.equal(module.eval()(x), x)
    torch.manual_seed(5)
    trained = module.train()(x)
    torch.manual_seed(5)
    assert torch.equal(trained, packed_dropout(x, 0.1))


def _qkv(heads=4, kv_heads=4, q_len=6, k_len=6):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, heads, q_len, 8, generator=g), torch.randn(2, kv_heads, k_len, 8, generator=g),
            torch.randn(2, kv_heads, k_len, 8, generator=g))


def _layer(training=True, groups=1, causal=False):
    return types.SimpleNamespace(training=training, num_key_value_groups=groups, is_causal=causal)


def _padding(dtype):
    keep = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    keep[1, :, :, -2:] = False  # the second row's last two keys are padding
    return keep if dtype == torch.bool else torch.zeros(2, 1, 6, 6).masked_fill(~keep, torch.finfo(torch.float).min)


@pytest.mark.parametrize("case", ["bool-mask", "float-mask", "no-mask", "causal", "grouped-query"])
def test_packed_attention_without_drops_matches_sdpa(case):
    heads_kv = 2 if case == "grouped-query" else 4
    q, k, v = _qkv(kv_heads=heads_kv)
    layer = _layer(groups=4 // heads_kv, causal=case == "causal")
    mask = {"bool-mask": _padding(torch.bool), "float-mask": _padding(torch.float)}.get(case)
    ours, _ = attention_with_packed_dropout(layer, q, k, v, mask, dropout=TINY_RATE, scaling=0.3)
    reference, _ = sdpa_attention_forward(layer, q, k, v, mask, dropout=0.0, scaling=0.3)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_packed_attention_drops_the_probabilities_by_hand():
    q, k, v = _qkv()
    mask = _padding(torch.bool)
    torch.manual_seed(7)
    ours, _ = attention_with_packed_dropout(_layer(), q, k, v, mask, dropout=0.1)
    torch.manual_seed(7)
    kept = keep_mask((2, 4, 6, 6), 0.1)
    scores = (q @ k.transpose(-1, -2)) / 8 ** 0.5
    probabilities = scores.masked_fill(~mask, float("-inf")).softmax(-1) * kept / (1 - quantised_rate(0.1))
    torch.testing.assert_close(ours, (probabilities @ v).transpose(1, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training, dropout", [(True, 0.0), (False, 0.1)])
def test_attention_off_the_packed_path_is_sdpa_itself(training, dropout):
    q, k, v = _qkv()
    torch.manual_seed(0)
    ours, _ = attention_with_packed_dropout(_layer(training), q, k, v, None, dropout=dropout)
    torch.manual_seed(0)
    reference, _ = sdpa_attention_forward(_layer(training), q, k, v, None, dropout=dropout)
    assert torch.equal(ours, reference)


def _tiny_lm(family):
    if family == "modernbert":  # its dropouts default to 0
        return tiny_lm(family, VOCAB, attention_dropout=0.1, embedding_dropout=0.1, mlp_dropout=0.1)
    return tiny_lm(family, VOCAB)


@pytest.mark.parametrize("family", FAMILIES + ENCODER_FAMILIES)
def test_swapped_model_evaluates_as_before_and_trains_reproducibly(family, tmp_path):
    model, inputs = _tiny_lm(family).eval(), padded_batch(VOCAB)
    dropouts = sum(type(m) is torch.nn.Dropout for m in model.modules())
    with torch.no_grad():
        before = model(**inputs).logits
        assert use_packed_dropout(model) == dropouts > 0
        assert not any(type(m) is torch.nn.Dropout for m in model.modules())
        torch.testing.assert_close(model(**inputs).logits, before, rtol=1e-5, atol=1e-5)
    if family != "deberta-v2":  # DeBERTa has one attention of its own (eager), which keeps torch's dropout
        assert model.config._attn_implementation == ATTENTION
    model.train()
    torch.manual_seed(1)
    first = model(**inputs).logits
    first.sum().backward()
    torch.manual_seed(1)
    assert torch.equal(model(**inputs).logits, first) and torch.isfinite(first).all()
    assert not torch.equal(first, before)  # dropout is on
    model.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()
    assert "Packed" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def _rate_everywhere(model, rate):
    """Every dropout rate of `model` set to `rate`: its modules' and the attention's, wherever a family keeps it."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = rate
        for name in ("attention_dropout", "dropout_prob"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, rate)


@pytest.mark.parametrize("family", [f for f in FAMILIES + ENCODER_FAMILIES if f != "deberta-v2"])
def test_swapped_model_in_training_takes_the_packed_paths_through_the_models_own_masks(family):
    """At a rate that rounds to nothing, training runs our attention with the model's own padding, causal and
    sliding-window masks and must give the logits of the untouched model in evaluation."""
    model, inputs = _tiny_lm(family).eval(), padded_batch(VOCAB)
    with torch.no_grad():
        reference = model(**inputs).logits
        use_packed_dropout(model)
        _rate_everywhere(model, TINY_RATE)
        logits = model.train()(**inputs).logits
    keep = inputs["attention_mask"].bool()
    torch.testing.assert_close(logits[keep], reference[keep], rtol=1e-5, atol=1e-5)


def test_dropout_step_benchmark_times_both_students(monkeypatch, tmp_path):
    """bench/dropout_step_cost.py on a small batch of the offline model: both students stepped and timed, and its
    --json file holds what it returned."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import dropout_step_cost

    result = dropout_step_cost.main(["--batch-size", "4", "--seq-len", "32", "--steps", "1", "--warmup", "0",
                                     "--json", str(tmp_path / "r.json")])
    assert set(result["step_ms"]) == {"torch", "packed"} and all(v > 0 for v in result["step_ms"].values())
    assert result["speedup_packed"] > 0
    assert json.loads((tmp_path / "r.json").read_text()) == result


@pytest.mark.parametrize("setting", ["torch", "packed"])
def test_training_takes_packed_dropout_only_when_the_recipe_asks(setting, tmp_path):
    """torch's kernels by default (a prune step with packed masks kept less retrieval recall@1 in three
    seeds, session 22); `train.cpu_dropout=packed` swaps every dropout and the attention on a CPU."""
    from pruneofa.train.config import TrainConfig
    from pruneofa.train.loop import fit
    from tests.train.test_checkpoint import tiny_job

    assert TrainConfig().cpu_dropout == "torch"
    job = tiny_job(tmp_path)
    job.config = job.config.model_copy(update={"cpu_dropout": setting, "max_steps": 1})
    dropouts = [type(m) for m in job.model.modules() if isinstance(m, torch.nn.Dropout)]
    fit(job)
    after = [type(m) for m in job.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(after) == len(dropouts) > 0
    assert set(after) == ({PackedDropout} if setting == "packed" else {torch.nn.Dropout})
    assert (job.model.config._attn_implementation == ATTENTION) == (setting == "packed")
