"""The LM stages' loss is the fused CE + KD computed from the output layer's input, and equals the
plain formula on the models' full logits; so does the Trainer's `DistillationLoss`."""

import pytest
import torch
import transformers
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

import pruneofa.stages.lm as lm
from pruneofa.deferred_logits import forward_deferring_logits
from pruneofa.distill import DistillationLoss, DistillConfig
from tests.conftest import FAMILIES, tiny_config
from tests.test_token_loss import reference_loss

VOCAB, SEQ = 97, 9
CONFIG = DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0)


def tiny_lm(family: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    config = tiny_config(family, VOCAB)
    auto = transformers.AutoModelForCausalLM if family == "gpt2" else transformers.AutoModelForMaskedLM
    return auto.from_config(config).eval()  # eval: no dropout, so two forwards agree


def lm_batch(causal: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, VOCAB, (3, SEQ), generator=g)
    mask = torch.ones_like(input_ids)
    mask[2, -3:] = 0  # padding
    if causal:
        labels = input_ids.masked_fill(mask == 0, -100)
    else:
        labels = input_ids.masked_fill(torch.rand(3, SEQ, generator=g) > 0.3, -100)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("family", FAMILIES)
def test_stage_loss_is_fused_from_the_output_layer_and_equals_the_plain_formula(family, monkeypatch):
    causal = family == "gpt2"
    student, teacher, batch = tiny_lm(family, 0), tiny_lm(family, 1), lm_batch(causal)
    sources = []

    def spy(student_logits, teacher_logits, *args, **kwargs):
        sources.append((student_logits, teacher_logits))
        return fused(student_logits, teacher_logits, *args, **kwargs)

    fused = lm.token_distillation_loss
    monkeypatch.setattr(lm, "token_distillation_loss", spy)
    parts = lm.lm_objective(CONFIG, causal)(student, teacher, batch)
    parts["loss"].backward()
    fused_grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    # the output layer was skipped in both models: no [tokens, vocab] logits were built
    assert [(s.weight is not None, t.weight is not None) for s, t in sources] == [(True, True)]

    student.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        t_logits = teacher(**inputs).logits
    ref = reference_loss(student(**inputs).logits, t_logits, batch["labels"], batch["attention_mask"], CONFIG, causal)
    ref.backward()
    torch.testing.assert_close(parts["loss"], ref.detach(), rtol=1e-5, atol=1e-6)
    assert fused_grads.keys() == {n for n, p in student.named_parameters() if p.grad is not None}
    for name, p in student.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(fused_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_teacher_stage_objective_is_the_ce_alone():
    model, batch = tiny_lm("bert", 0), lm_batch(causal=False)
    parts = lm.lm_objective(DistillConfig(alpha_ce=1.0, alpha_kd=0.0), causal=False)(model, None, batch)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    ref = reference_loss(model(**inputs).logits, None, batch["labels"], batch["attention_mask"], CONFIG)
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-5, atol=1e-6)
    assert set(parts) == {"loss", "ce"}


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_trainer_loss_equals_the_plain_formula(family):
    causal = family == "gpt2"
    student, teacher, batch = tiny_lm(family, 0).train(), tiny_lm(family, 1), lm_batch(causal)
    kd = DistillationLoss(teacher, CONFIG).attach(student)
    labels = batch.pop("labels")  # what the Trainer does when a compute_loss_func is set
    outputs = student(**batch)  # the pre-hook runs the teacher, its output layer skipped
    assert kd._teacher_logits.weight is not None
    loss = kd(outputs, labels)
    (grad,) = torch.autograd.grad(loss, outputs.logits)
    s_ref = outputs.logits.detach().clone().requires_grad_()
    with torch.no_grad():
        t_logits = teacher(**batch).logits
    ref = reference_loss(s_ref, t_logits, labels, batch["attention_mask"], CONFIG, causal)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, s_ref.grad, rtol=1e-4, atol=1e-7)


class DoubledLogits(nn.Module):
    """A model that changes its logits after the output layer (like soft-capping does)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, VOCAB)

    def get_output_embeddings(self) -> nn.Module:
        return self.head

    def forward(self, x):
        return MaskedLMOutput(logits=2 * self.head(x))


def test_logits_changed_after_the_output_layer_are_computed_in_full():
    model, x = DoubledLogits(), torch.randn(2, 3, 4)
    for _ in range(2):  # found out on the first call, remembered on the second
        out, source = forward_deferring_logits(model, x)
        assert source.weight is None
        torch.testing.assert_close(source.values, 2 * model.head(x))


def test_hidden_state_term_is_added_on_top():
    from pruneofa.distill import hidden_state_mse

    config = DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0, alpha_hidden=0.3)
    student, teacher, batch = tiny_lm("bert", 0), tiny_lm("bert", 1), lm_batch(causal=False)
    parts = lm.lm_objective(config, causal=False)(student, teacher, batch)
    inputs, mask = {k: v for k, v in batch.items() if k != "labels"}, batch["attention_mask"]
    out_s, out_t = student(**inputs, output_hidden_states=True), teacher(**inputs, output_hidden_states=True)
    hidden = hidden_state_mse(out_s.hidden_states, out_t.hidden_states, mask)
    ref = reference_loss(out_s.logits, out_t.logits, batch["labels"], mask, config) + 0.3 * hidden
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["hidden"], hidden.detach())


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_evaluation_loss_is_transformers_lm_loss(family, tokenizer):
    from types import SimpleNamespace

    causal = family == "gpt2"
    torch.manual_seed(0)
    config = tiny_config(family, len(tokenizer))
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForMaskedLM
    model = auto.from_config(config).eval()
    blocks = torch.randint(1000, 2000, (6, SEQ))
    recipe = SimpleNamespace(train=SimpleNamespace(batch_size=4, grad_accum=1, eval_batches=2, mlm_probability=0.3))
    with torch.no_grad():
        got = lm.lm_evaluator(tokenizer, causal, recipe, blocks)(model)["eval_loss"]
        collator = lm._collator(tokenizer, causal, 0.3, seed=lm.EVAL_SEED)
        expected = [model(**lm._batch(collator, blocks, idx)).loss.item() for idx in ([0, 1, 2, 3], [4, 5])]
    assert got == pytest.approx(sum(expected) / 2, rel=1e-5)
