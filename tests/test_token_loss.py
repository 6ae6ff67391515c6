"""The fused, chunked CE + KD equals the plain formula, in value and gradient (float64, small shapes)."""

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import MaskedLMOutput

from pruneofa import token_loss
from pruneofa.distill import DistillConfig, distillation_loss, token_distillation_loss
from pruneofa.token_loss import LogitSource

BATCH, SEQ, VOCAB, HIDDEN = 2, 7, 11, 5


def reference_loss(s, t, labels, mask, config, causal=False, n_items=None):
    """The unfused formula: full log-softmaxes over every position."""
    if causal:
        s_ce, labels = s[:, :-1], labels[:, 1:]
    else:
        s_ce = s
    counted = labels != -100
    ce = F.cross_entropy(s_ce[counted], labels[counted], reduction="sum") / (n_items or counted.sum().clamp_min(1))
    if t is None or config.alpha_kd == 0:
        return ce
    T = config.temperature
    lp_s, lp_t = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    kl = (lp_t.exp() * (lp_t - lp_s)).sum(-1)
    kd = T**2 * (kl * mask).sum() / mask.sum()
    return config.alpha_ce * ce + config.alpha_kd * kd


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(token_loss, "CHUNK_ELEMENTS", 3 * VOCAB)  # 3 rows a chunk: 14 rows end in a ragged one


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(BATCH, SEQ, VOCAB, dtype=torch.float64, generator=g)
    t = torch.randn(BATCH, SEQ, VOCAB, dtype=torch.float64, generator=g)
    labels = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)
    labels[torch.rand(BATCH, SEQ, generator=g) < 0.6] = -100  # MLM: most positions have no target
    labels[0, 0], labels[1, 3] = 4, -100
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, -2:] = 0  # padding: no KD there
    labels[1, -2:] = -100
    return s, t, labels, mask


CONFIGS = [DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0),
           DistillConfig(alpha_ce=0.3, alpha_kd=0.7, temperature=1.0),
           DistillConfig(alpha_ce=0.0, alpha_kd=1.0, temperature=3.0),
           DistillConfig(alpha_ce=0.5, alpha_kd=0.0, temperature=2.0)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"ce{c.alpha_ce}-kd{c.alpha_kd}-T{c.temperature}")
def test_loss_and_logit_gradient_equal_the_unfused_formula(config, causal, small_chunks):
    s, t, labels, mask = batch()
    s_ref, s_fused = s.clone().requires_grad_(), s.clone().requires_grad_()
    ref = reference_loss(s_ref, t, labels, mask, config, causal)
    parts = distillation_loss(MaskedLMOutput(logits=s_fused), MaskedLMOutput(logits=t), config, mask,
                              labels=labels, causal=causal)
    (0.25 * ref).backward()  # a scale on the way back (gradient accumulation) must pass through
    (0.25 * parts["loss"]).backward()
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_fused.grad, s_ref.grad, rtol=1e-10, atol=1e-12)
    assert set(parts) == ({"loss", "ce"} if config.alpha_kd == 0 else {"loss", "ce", "kd"})


def test_output_layer_source_gives_the_gradients_of_features_weight_and_bias(small_chunks):
    _, _, labels, mask = batch()
    g = torch.Generator().manual_seed(1)
    h, w, b = (torch.randn(*shape, dtype=torch.float64, generator=g) for shape in
               [(BATCH, SEQ, HIDDEN), (VOCAB, HIDDEN), (VOCAB,)])
    h_t, w_t = torch.randn(BATCH, SEQ, HIDDEN, dtype=torch.float64, generator=g), torch.randn(VOCAB, HIDDEN, dtype=torch.float64, generator=g)
    config = CONFIGS[0]
    ref_inputs = [x.clone().requires_grad_() for x in (h, w, b)]
    ref = reference_loss(F.linear(*ref_inputs), F.linear(h_t, w_t), labels, mask, config)
    ref.backward()
    inputs = [x.clone().requires_grad_() for x in (h, w, b)]
    parts = token_distillation_loss(LogitSource(*inputs), LogitSource(h_t, w_t), labels, config, mask)
    parts["loss"].backward()
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-12, atol=1e-12)
    for fused, plain in zip(inputs, ref_inputs):
        torch.testing.assert_close(fused.grad, plain.grad, rtol=1e-10, atol=1e-12)


def test_without_teacher_it_is_the_ce_alone_over_the_labelled_positions(small_chunks):
    s, t, labels, mask = batch()
    for teacher in (None, MaskedLMOutput(logits=t)):
        s_fused, s_ref = s.clone().requires_grad_(), s.clone().requires_grad_()
        config = DistillConfig(alpha_ce=0.5, alpha_kd=0.0) if teacher else DistillConfig()
        parts = distillation_loss(MaskedLMOutput(logits=s_fused), teacher, config, mask, labels=labels)
        ref = F.cross_entropy(s_ref.reshape(-1, VOCAB), labels.reshape(-1))  # ignores -100
        parts["loss"].backward()
        ref.backward()
        torch.testing.assert_close(parts["loss"], ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s_fused.grad, s_ref.grad, rtol=1e-10, atol=1e-12)


def test_ce_is_averaged_over_num_items_in_batch_when_given(small_chunks):
    s, t, labels, mask = batch()
    parts = distillation_loss(MaskedLMOutput(logits=s), MaskedLMOutput(logits=t), CONFIGS[0], mask, labels=labels,
                              num_items_in_batch=13)
    ref = reference_loss(s, t, labels, mask, CONFIGS[0], n_items=13)
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-12, atol=1e-12)


def test_reported_parts_are_the_ce_and_kd_terms_detached(small_chunks):
    s, t, labels, mask = batch()
    s = s.requires_grad_()
    parts = distillation_loss(MaskedLMOutput(logits=s), MaskedLMOutput(logits=t), CONFIGS[0], mask, labels=labels)
    only_ce = reference_loss(s, None, labels, mask, CONFIGS[0])
    only_kd = reference_loss(s, t, labels, mask, DistillConfig(alpha_ce=0.0, alpha_kd=1.0, temperature=2.0))
    torch.testing.assert_close(parts["ce"], only_ce.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts["kd"], only_kd.detach(), rtol=1e-12, atol=1e-12)
    assert not parts["ce"].requires_grad and not parts["kd"].requires_grad


def test_no_labelled_position_gives_zero_ce_and_zero_gradient():
    s, t, labels, mask = batch()
    s = s.requires_grad_()
    parts = distillation_loss(MaskedLMOutput(logits=s), None, DistillConfig(), mask, labels=torch.full_like(labels, -100))
    parts["loss"].backward()
    assert parts["loss"].item() == 0.0 and not s.grad.any()


def test_under_no_grad_no_gradient_is_built():
    s, t, labels, mask = batch()
    with torch.no_grad():
        loss = distillation_loss(MaskedLMOutput(logits=s.requires_grad_()), MaskedLMOutput(logits=t), CONFIGS[0],
                                 mask, labels=labels)["loss"]
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, reference_loss(s.detach(), t, labels, mask, CONFIGS[0]), rtol=1e-12, atol=1e-12)


def test_chunk_size_follows_the_device_and_its_free_memory():
    cpu = token_loss.chunk_elements("cpu", None)
    assert cpu == token_loss.CHUNK_ELEMENTS  # a CPU keeps cache-sized chunks, whatever its memory
    assert token_loss.chunk_elements("cpu", 1 << 40) == cpu
    per_element = token_loss.FREE_MEMORY_SHARE * token_loss.LIVE_TEMPORARIES * 4
    mid = token_loss.chunk_elements("cuda", 1 << 34)  # 16 GiB free
    assert mid == (1 << 34) // per_element and cpu < mid < token_loss.GPU_MAX_ELEMENTS
    assert mid * per_element <= 1 << 34  # the temporaries stay within their share of the free memory
    assert token_loss.chunk_elements("cuda", 1 << 44) == token_loss.GPU_MAX_ELEMENTS  # bounded above
    assert token_loss.chunk_elements("cuda", 1 << 20) == cpu  # a nearly full GPU: never below the CPU size
    # BERT's 30522-token vocabulary: 137 rows on a CPU, thousands of rows on a GPU with 16 GiB free
    assert token_loss.chunk_rows(30522) == 137
    assert token_loss.chunk_rows(30522, mid) == mid // 30522 > 1000


def test_cpu_tensors_use_the_cpu_chunk():
    assert token_loss.free_memory(torch.device("cpu")) is None


@pytest.mark.parametrize("causal", [False, True])
def test_kd_on_masked_positions_counts_only_the_labelled_tokens(causal, small_chunks):
    s, t, labels, mask = batch()
    config = DistillConfig(alpha_ce=0.4, alpha_kd=0.6, temperature=2.0, kd_positions="masked")
    targets = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], 1) if causal else labels
    s_ref, s_fused = s.clone().requires_grad_(), s.clone().requires_grad_()
    ref = reference_loss(s_ref, t, labels, mask * (targets != -100), config, causal)
    parts = distillation_loss(MaskedLMOutput(logits=s_fused), MaskedLMOutput(logits=t), config, mask,
                              labels=labels, causal=causal)
    ref.backward()
    parts["loss"].backward()
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_fused.grad, s_ref.grad, rtol=1e-10, atol=1e-12)
    unlabelled = targets == -100
    assert s_fused.grad[unlabelled].abs().max() == 0 and s_fused.grad[~unlabelled].abs().min() > 0
    all_tokens = distillation_loss(MaskedLMOutput(logits=s), MaskedLMOutput(logits=t),
                                   config.model_copy(update={"kd_positions": "all"}), mask, labels=labels, causal=causal)
    assert not torch.isclose(all_tokens["kd"], parts["kd"])  # a different set of tokens: a different KD
