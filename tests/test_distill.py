import math

import pytest
import torch
from transformers.modeling_outputs import MaskedLMOutput

from pruneofa.distill import DistillConfig, distillation_loss, kd_divergence
from pruneofa.errors import UserError


def softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_equals_a_hand_computation_over_non_padding_tokens():
    s = torch.tensor([[[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [3.0, -1.0, 0.0]]])
    t = torch.tensor([[[2.0, 1.0, 0.0], [9.0, 9.0, -9.0], [1.0, 1.0, 1.0]]])
    mask = torch.tensor([[1, 0, 1]])  # the middle token is padding and must not count
    T = 2.0
    per_token = []
    for pos in (0, 2):
        p_t = softmax([v / T for v in t[0, pos].tolist()])
        p_s = softmax([v / T for v in s[0, pos].tolist()])
        per_token.append(sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s)))
    expected = T**2 * sum(per_token) / 2
    assert kd_divergence(s, t, T, mask).item() == pytest.approx(expected, rel=1e-6)


def test_total_loss_weights_ce_and_kd():
    s, t = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    out_s, out_t = MaskedLMOutput(loss=torch.tensor(3.0), logits=s), MaskedLMOutput(logits=t)
    cfg = DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0)
    parts = distillation_loss(out_s, out_t, cfg)
    assert parts["loss"].item() == pytest.approx(0.5 * 3.0 + 0.5 * kd_divergence(s, t, 2.0).item(), rel=1e-6)
    assert distillation_loss(out_s, out_t, DistillConfig(alpha_kd=0.0))["loss"].item() == pytest.approx(3.0)


def test_kd_is_zero_when_student_matches_teacher():
    x = torch.randn(3, 4, 11)
    assert kd_divergence(x, x.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_chunked_kd_gradient_equals_autograd_of_the_formula(monkeypatch):
    import torch.nn.functional as F

    from pruneofa import token_loss

    monkeypatch.setattr(token_loss, "CHUNK_ELEMENTS", 40 * 64)  # 64 rows a chunk
    torch.manual_seed(0)
    rows = 64 * 2 + 37  # several chunks and a ragged last one
    s = torch.randn(1, rows, 40, requires_grad=True)
    t = torch.randn(1, rows, 40)
    mask = (torch.rand(1, rows) > 0.25).long()
    ref_s = s.detach().clone().requires_grad_()
    lp_s, lp_t = F.log_softmax(ref_s / 2.0, -1), F.log_softmax(t / 2.0, -1)
    ref = 4.0 * ((lp_t.exp() * (lp_t - lp_s)).sum(-1) * mask).sum() / mask.sum()
    ref.backward()
    out = kd_divergence(s, t, 2.0, mask)
    out.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(s.grad, ref_s.grad, rtol=1e-5, atol=1e-9)


def test_config_refuses_unknown_keys_and_impossible_layer_lists():
    from pydantic import ValidationError

    for bad in ({"alpha_attn": 1.0}, {"attention_layers": [0]}, {"attention_layers": []}, {"hidden_layers": [-1]}):
        with pytest.raises(ValidationError):
            DistillConfig(**bad)
    assert DistillConfig(hidden_layers=[0, None, 4]).hidden_layers == [0, None, 4]
    assert not DistillConfig(alpha_kd=0.0).uses_teacher
    assert DistillConfig(alpha_kd=0.0, alpha_attention=0.1).uses_teacher


def test_classifier_kd_counts_examples_while_the_representation_terms_count_tokens():
    from transformers.modeling_outputs import SequenceClassifierOutput

    from pruneofa.representation_kd import scaled_hidden_state_loss

    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    h_s, h_t = [torch.randn(2, 3, 4) for _ in range(3)], [torch.randn(2, 3, 4) for _ in range(3)]
    out_s = SequenceClassifierOutput(loss=torch.tensor(2.0), logits=s, hidden_states=tuple(h_s))
    out_t = SequenceClassifierOutput(logits=t, hidden_states=tuple(h_t))
    cfg = DistillConfig(alpha_ce=0.5, alpha_kd=0.25, temperature=2.0, alpha_hidden=0.3)
    parts = distillation_loss(out_s, out_t, cfg, mask)
    hidden = scaled_hidden_state_loss(h_s, h_t, [(0, 0), (1, 1), (2, 2)], mask)
    expected = 0.5 * 2.0 + 0.25 * kd_divergence(s, t, 2.0).item() + 0.3 * hidden.item()
    assert parts["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert parts["hidden"].item() == pytest.approx(hidden.item(), rel=1e-6)
    # with α_kd = 0 the CE keeps its weight α_ce while a representation term is on, and no KD is computed
    parts = distillation_loss(out_s, out_t, cfg.model_copy(update={"alpha_kd": 0.0}), mask)
    assert parts["loss"].item() == pytest.approx(0.5 * 2.0 + 0.3 * hidden.item(), rel=1e-6) and "kd" not in parts


def classifier_outputs_with_hidden_states():
    """(student output with loss 2.0, teacher output, student and teacher hidden states, mask): 3 states of [2, 3, 4]."""
    from transformers.modeling_outputs import SequenceClassifierOutput

    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    h_s, h_t = [torch.randn(2, 3, 4) for _ in range(3)], [torch.randn(2, 3, 4) for _ in range(3)]
    out_s = SequenceClassifierOutput(loss=torch.tensor(2.0), logits=torch.randn(2, 3), hidden_states=tuple(h_s))
    out_t = SequenceClassifierOutput(logits=torch.randn(2, 3), hidden_states=tuple(h_t))
    return out_s, out_t, h_s, h_t, mask


def test_sentence_term_adds_to_the_loss_from_the_last_hidden_states():
    from pruneofa.distill import representation_outputs
    from pruneofa.representation_kd import sentence_embedding_loss

    out_s, out_t, h_s, h_t, mask = classifier_outputs_with_hidden_states()
    cfg = DistillConfig(alpha_ce=0.5, alpha_kd=0.0, alpha_sentence=4.0)
    assert cfg.uses_teacher and representation_outputs(cfg) == {"output_hidden_states": True}
    parts = distillation_loss(out_s, out_t, cfg, mask)
    sentence = sentence_embedding_loss(h_s[-1], h_t[-1], mask).item()
    assert sentence > 0.1 and parts["sentence"].item() == pytest.approx(sentence, rel=1e-6)
    assert parts["loss"].item() == pytest.approx(0.5 * 2.0 + 4.0 * sentence, rel=1e-6)
    assert "hidden" not in parts and "attention" not in parts


def test_cls_term_adds_to_the_loss_from_the_last_hidden_state_at_position_0():
    from pruneofa.distill import representation_outputs
    from pruneofa.representation_kd import first_token_loss, sentence_embedding_loss

    out_s, out_t, h_s, h_t, mask = classifier_outputs_with_hidden_states()
    cfg = DistillConfig(alpha_ce=0.5, alpha_kd=0.0, alpha_cls=3.0)
    assert cfg.uses_teacher and representation_outputs(cfg) == {"output_hidden_states": True}
    parts = distillation_loss(out_s, out_t, cfg, mask)
    first = first_token_loss(h_s[-1], h_t[-1]).item()
    assert first > 0.1 and parts["cls"].item() == pytest.approx(first, rel=1e-6)
    assert parts["loss"].item() == pytest.approx(0.5 * 2.0 + 3.0 * first, rel=1e-6) and "sentence" not in parts
    both = distillation_loss(out_s, out_t, cfg.model_copy(update={"alpha_sentence": 2.0}), mask)
    sentence = sentence_embedding_loss(h_s[-1], h_t[-1], mask).item()
    assert both["loss"].item() == pytest.approx(0.5 * 2.0 + 3.0 * first + 2.0 * sentence, rel=1e-6)


def test_cls_term_refuses_a_causal_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    from pruneofa.distill import prepare_for_distillation

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20, n_positions=8))
    with pytest.raises(UserError, match=r"distill.alpha_cls=0"):
        prepare_for_distillation(model, model, DistillConfig(alpha_cls=1.0))
