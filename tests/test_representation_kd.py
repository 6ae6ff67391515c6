"""The representation-KD terms against hand computations written as plain loops on tiny tensors."""

import math

import pytest
import torch

from pruneofa.errors import UserError
from pruneofa.representation_kd import (
    attention_kl,
    attention_pairs,
    clean_spans,
    first_token_loss,
    hidden_pairs,
    layer_map,
    scaled_hidden_state_loss,
    sentence_embedding_loss,
)

BATCH, TOKENS, WIDTH, HEADS = 2, 4, 3, 2
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])  # the second example ends in two padding tokens


def hidden_states(n_layers: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(BATCH, TOKENS, WIDTH, generator=g) * (i + 1) for i in range(n_layers + 1))


def attentions(n_layers: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Distributions over the keys the mask keeps, exactly 0 on padded keys (as a model's are)."""
    g = torch.Generator().manual_seed(seed)
    padded_keys = (MASK == 0)[:, None, None, :]
    return tuple(torch.randn(BATCH, HEADS, TOKENS, TOKENS, generator=g).masked_fill(padded_keys, -math.inf).softmax(-1)
                 for _ in range(n_layers))


def hand_hidden(student, teacher, pairs, mask):
    per_layer = []
    for i, j in pairs:
        error = scale = 0.0
        for b in range(BATCH):
            for n in range(TOKENS):
                if mask[b][n]:
                    for d in range(WIDTH):
                        error += (student[i][b, n, d].item() - teacher[j][b, n, d].item()) ** 2
                        scale += teacher[j][b, n, d].item() ** 2
        per_layer.append(error / scale)
    return sum(per_layer) / len(per_layer)


def hand_attention(student, teacher, pairs, mask):
    per_layer = []
    for i, j in pairs:
        total, queries = 0.0, 0
        for b in range(BATCH):
            for q in range(TOKENS):
                if not mask[b][q]:
                    continue
                queries += 1
                for h in range(HEADS):
                    for k in range(TOKENS):
                        p_t, p_s = teacher[j - 1][b, h, q, k].item(), student[i - 1][b, h, q, k].item()
                        if p_t > 0:
                            total += p_t * (math.log(p_t) - math.log(p_s)) / HEADS
        per_layer.append(total / queries)
    return sum(per_layer) / len(per_layer)


def hand_sentence(student, teacher, mask):
    """1 - cos of the masked token means, example by example, averaged."""
    total = 0.0
    for b in range(BATCH):
        kept = [n for n in range(TOKENS) if mask[b][n]]
        e_s = [sum(student[b, n, d].item() for n in kept) / len(kept) for d in range(WIDTH)]
        e_t = [sum(teacher[b, n, d].item() for n in kept) / len(kept) for d in range(WIDTH)]
        dot = sum(x * y for x, y in zip(e_s, e_t))
        total += 1 - dot / (math.sqrt(sum(x * x for x in e_s)) * math.sqrt(sum(y * y for y in e_t)))
    return total / BATCH


def test_uniform_layer_map_of_a_2_layer_student_on_a_4_layer_teacher():
    mapping = layer_map(2, 4)
    assert mapping == [0, 2, 4]  # embeddings to embeddings, layer 1 to 2, the last to the last
    assert hidden_pairs(mapping) == [(0, 0), (1, 2), (2, 4)]
    assert attention_pairs(mapping) == [(2, 4)]  # the last layer by default
    assert attention_pairs(mapping, [1, 2]) == [(1, 2), (2, 4)]
    assert layer_map(3, 12) == [0, 4, 8, 12] and layer_map(4, 4) == [0, 1, 2, 3, 4]


def test_explicit_layer_map_and_its_refusals():
    mapping = layer_map(2, 4, [0, None, 3])
    assert hidden_pairs(mapping) == [(0, 0), (2, 3)]
    assert attention_pairs(mapping, [2]) == [(2, 3)]
    with pytest.raises(UserError, match="maps to no teacher layer"):
        attention_pairs(mapping, [1])
    with pytest.raises(UserError, match="the student has layers 1..2"):
        attention_pairs(mapping, [3])
    with pytest.raises(UserError, match="has 2 entries for the student's 3 hidden states"):
        layer_map(2, 4, [0, 4])
    with pytest.raises(UserError, match="the teacher has 0..4"):
        layer_map(2, 4, [0, 2, 5])


def test_hidden_term_equals_the_hand_computation_through_the_layer_map():
    student, teacher = hidden_states(2, 0), hidden_states(4, 1)
    pairs = hidden_pairs(layer_map(2, 4))
    got = scaled_hidden_state_loss(student, teacher, pairs, MASK)
    assert got.item() == pytest.approx(hand_hidden(student, teacher, pairs, MASK.tolist()), rel=1e-5)
    all_tokens = [[1] * TOKENS] * BATCH
    assert scaled_hidden_state_loss(student, teacher, pairs).item() == pytest.approx(
        hand_hidden(student, teacher, pairs, all_tokens), rel=1e-5)


def test_hidden_term_is_scale_free_and_one_for_a_zero_student():
    student, teacher = hidden_states(2, 0), hidden_states(2, 1)
    pairs = hidden_pairs(layer_map(2, 2))
    base = scaled_hidden_state_loss(student, teacher, pairs, MASK)
    scaled = scaled_hidden_state_loss([10 * h for h in student], [10 * h for h in teacher], pairs, MASK)
    assert scaled.item() == pytest.approx(base.item(), rel=1e-5)
    zeros = [torch.zeros_like(h) for h in student]
    assert scaled_hidden_state_loss(zeros, teacher, pairs, MASK).item() == pytest.approx(1.0, rel=1e-6)


def test_attention_term_equals_the_hand_computation_through_the_layer_map():
    student, teacher = attentions(2, 2), attentions(4, 3)
    pairs = attention_pairs(layer_map(2, 4), [1, 2])
    got = attention_kl(student, teacher, pairs, MASK)
    assert got.item() == pytest.approx(hand_attention(student, teacher, pairs, MASK.tolist()), rel=1e-5)


def test_padding_positions_do_not_count():
    student_h, teacher_h = hidden_states(2, 0), hidden_states(2, 1)
    student_a, teacher_a = attentions(2, 2), attentions(2, 3)
    h_pairs, a_pairs = hidden_pairs(layer_map(2, 2)), attention_pairs(layer_map(2, 2), [1, 2])
    padded = (MASK == 0)
    changed_h = tuple(h.masked_fill(padded[..., None], 123.0) for h in student_h)
    changed_a = tuple(a.masked_fill(padded[:, None, :, None], 0.5) for a in student_a)  # padded query rows
    torch.testing.assert_close(scaled_hidden_state_loss(changed_h, teacher_h, h_pairs, MASK),
                               scaled_hidden_state_loss(student_h, teacher_h, h_pairs, MASK))
    torch.testing.assert_close(attention_kl(changed_a, teacher_a, a_pairs, MASK),
                               attention_kl(student_a, teacher_a, a_pairs, MASK))
    # without the mask they would have counted
    assert not torch.allclose(scaled_hidden_state_loss(changed_h, teacher_h, h_pairs),
                              scaled_hidden_state_loss(student_h, teacher_h, h_pairs))


def test_both_terms_are_zero_when_the_student_is_the_teacher():
    teacher_h, teacher_a = hidden_states(4, 1), attentions(4, 3)
    mapping = layer_map(2, 4)
    student_h = tuple(teacher_h[j].clone() for j in mapping)  # a student reproducing the mapped teacher layers
    student_a = tuple(teacher_a[j - 1].clone() for j in mapping[1:])
    hidden = scaled_hidden_state_loss(student_h, teacher_h, hidden_pairs(mapping), MASK)
    attention = attention_kl(student_a, teacher_a, attention_pairs(mapping, [1, 2]), MASK)
    assert hidden.item() == pytest.approx(0.0, abs=1e-7) and attention.item() == pytest.approx(0.0, abs=1e-7)


def test_gradients_flow_to_the_student_and_stay_finite_at_zero_probabilities():
    student_h = tuple(h.requires_grad_() for h in hidden_states(2, 0))
    logits = torch.randn(BATCH, HEADS, TOKENS, TOKENS, requires_grad=True)
    padded_keys = (MASK == 0)[:, None, None, :]
    student_a = (logits.masked_fill(padded_keys, -math.inf).softmax(-1),) * 2
    mapping = layer_map(2, 4)
    loss = (scaled_hidden_state_loss(student_h, hidden_states(4, 1), hidden_pairs(mapping), MASK)
            + attention_kl(student_a, attentions(4, 3), attention_pairs(mapping), MASK))
    loss.backward()
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in student_h)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert (student_h[0].grad[1, 2:] == 0).all()  # padding tokens get no gradient


def test_width_and_head_mismatches_are_refused_in_one_line():
    pairs = hidden_pairs(layer_map(2, 2))
    wide = tuple(torch.randn(BATCH, TOKENS, WIDTH + 1) for _ in range(3))
    with pytest.raises(UserError, match=r"hidden width to equal the teacher's \(3 vs 4\)") as err:
        scaled_hidden_state_loss(hidden_states(2, 0), wide, pairs, MASK)
    assert "\n" not in str(err.value) and "distill.alpha_hidden=0" in str(err.value)
    more_heads = tuple(torch.full((BATCH, HEADS + 2, TOKENS, TOKENS), 1 / TOKENS) for _ in range(2))
    with pytest.raises(UserError, match=r"number of attention heads to equal the teacher's \(2 vs 4\)"):
        attention_kl(attentions(2, 2), more_heads, attention_pairs(layer_map(2, 2)), MASK)


def test_sentence_term_equals_the_hand_computation_and_ignores_padding():
    student, teacher = hidden_states(0, 0)[0], hidden_states(0, 1)[0]
    got = sentence_embedding_loss(student, teacher, MASK)
    assert got.item() == pytest.approx(hand_sentence(student, teacher, MASK.tolist()), rel=1e-5)
    changed = student.masked_fill((MASK == 0)[..., None], 123.0)
    torch.testing.assert_close(sentence_embedding_loss(changed, teacher, MASK), got)
    assert sentence_embedding_loss(changed, teacher).item() != pytest.approx(got.item(), rel=1e-3)


def test_sentence_term_sees_directions_only():
    student, teacher = hidden_states(0, 0)[0], hidden_states(0, 1)[0]
    base = sentence_embedding_loss(student, teacher, MASK)
    torch.testing.assert_close(sentence_embedding_loss(5 * student, 0.1 * teacher, MASK), base)
    assert sentence_embedding_loss(3 * teacher, teacher, MASK).item() == pytest.approx(0.0, abs=1e-6)
    assert sentence_embedding_loss(-teacher, teacher, MASK).item() == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(UserError, match=r"distill.alpha_sentence=0"):
        sentence_embedding_loss(student, torch.randn(BATCH, TOKENS, WIDTH + 1), MASK)


def test_cls_term_is_one_minus_the_cosine_at_position_0_only():
    student, teacher = hidden_states(0, 0)[0], hidden_states(0, 1)[0]
    hand = 0.0
    for b in range(BATCH):
        s, t = student[b, 0].tolist(), teacher[b, 0].tolist()
        norms = math.sqrt(sum(x * x for x in s)) * math.sqrt(sum(y * y for y in t))
        hand += 1 - sum(x * y for x, y in zip(s, t)) / norms
    got = first_token_loss(student, teacher)
    assert got.item() == pytest.approx(hand / BATCH, rel=1e-5)
    later_tokens_changed = torch.cat([student[:, :1], student[:, 1:] * -7.0], dim=1)
    torch.testing.assert_close(first_token_loss(later_tokens_changed, teacher), got)
    assert first_token_loss(2 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(UserError, match=r"distill.alpha_cls=0"):
        first_token_loss(student, torch.randn(BATCH, TOKENS, WIDTH + 1))


def test_clean_spans_are_unmasked_framed_and_within_the_lengths():
    ids = torch.arange(100, 140).reshape(2, 20)
    ids[:, 0], ids[:, -1] = 1, 2  # a packed block's [CLS] ... [SEP]
    ids[1, 15:] = 0  # the second row: 15 real tokens, then padding
    attention = (ids != 0).long()
    attention[1, 14] = 1
    ids[1, 14] = 2
    masked = ids.clone()
    labels = torch.full_like(ids, -100)
    for b, n in ((0, 3), (0, 7), (1, 5)):  # three masked tokens, as the MLM collator leaves them
        labels[b, n], masked[b, n] = ids[b, n], 999
    for seed in range(20):
        spans, mask = clean_spans(masked, labels, attention, (3, 8), torch.Generator().manual_seed(seed))
        for b in range(2):
            n = int(mask[b].sum())
            row = spans[b, :n].tolist()
            assert row[0] == 1 and row[-1] == 2 and 3 <= n - 2 <= 8 and 999 not in row
            inner = row[1:-1]
            real = ids[b, 1:int(attention[b].sum()) - 1].tolist()
            start = real.index(inner[0])
            assert real[start:start + len(inner)] == inner  # a contiguous piece of the original row
            assert (spans[b, n:] == 0).all()
    again = clean_spans(masked, labels, attention, (3, 8), torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, clean_spans(masked, labels, attention, (3, 8), torch.Generator().manual_seed(0)))


def test_relational_loss_is_zero_for_the_teachers_ranking_and_grows_when_the_student_reorders_it():
    from pruneofa.representation_kd import relational_loss

    torch.manual_seed(0)
    teacher = torch.randn(8, 16)
    assert relational_loss(teacher * 3.0, teacher, 0.05) < 1e-6  # scale does not change a cosine
    student = teacher.clone().requires_grad_(True)
    assert relational_loss(student, teacher, 0.05) < 1e-6
    shuffled = teacher[torch.randperm(8)]
    loss = relational_loss(shuffled.clone().requires_grad_(True), teacher, 0.05)
    assert loss > 0.1
    wider = torch.randn(8, 32, requires_grad=True)  # only similarities are compared: widths may differ
    relational_loss(wider, teacher, 0.05).backward()
    assert wider.grad is not None and wider.grad.abs().sum() > 0
    tiny = relational_loss(torch.randn(2, 16, requires_grad=True), teacher[:2], 0.05)
    assert tiny == 0 and tiny.requires_grad  # two rows rank nothing
