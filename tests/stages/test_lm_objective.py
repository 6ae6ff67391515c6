"""The LM stages' loss is the fused CE + KD computed from the output layer's input, and equals the
plain formula on the models' full logits; so does the Trainer's `DistillationLoss`."""

import pytest
import torch
import transformers
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

import pruneofa.stages.lm as lm
from pruneofa.deferred_logits import forward_deferring_logits
from pruneofa.distill import DistillConfig
from pruneofa.errors import UserError
from pruneofa.trainer_kd import DistillationLoss
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


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_the_skipped_output_layer_is_put_back_even_when_the_forward_fails(family):
    model, batch = tiny_lm(family, 0), lm_batch(family == "gpt2")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    layer = model.get_output_embeddings()
    out, source = forward_deferring_logits(model, **inputs)
    assert out.logits is None and source.weight is layer.weight
    assert model.get_output_embeddings() is layer and "forward" not in vars(layer)
    with pytest.raises(RuntimeError):  # float token ids: the embedding lookup fails mid-forward
        forward_deferring_logits(model, **{**inputs, "input_ids": inputs["input_ids"].float()})
    assert model.get_output_embeddings() is layer
    torch.testing.assert_close(model(**inputs).logits, source.materialize())


def test_an_output_layer_replaced_between_calls_is_the_one_skipped():
    """Where the layer sits is remembered per model; a new layer (resize_token_embeddings, a new head) is found."""
    model, batch = tiny_lm("bert", 0), lm_batch(False)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    forward_deferring_logits(model, **inputs)
    old = model.get_output_embeddings()
    new = nn.Linear(old.in_features, old.out_features)
    model.set_output_embeddings(new)
    out, source = forward_deferring_logits(model, **inputs)
    assert out.logits is None and source.weight is new.weight
    assert model.get_output_embeddings() is new
    torch.testing.assert_close(model(**inputs).logits, source.materialize())


def test_logits_changed_after_the_output_layer_are_computed_in_full():
    model, x = DoubledLogits(), torch.randn(2, 3, 4)
    for _ in range(2):  # found out on the first call, remembered on the second
        out, source = forward_deferring_logits(model, x)
        assert source.weight is None
        torch.testing.assert_close(source.values, 2 * model.head(x))


def representation_reference(out_s, out_t, mask, config):
    """α_hidden · L_hid + α_attention · L_att of a student of 2 layers and a teacher of 4 (uniform map)."""
    from pruneofa.representation_kd import attention_kl, scaled_hidden_state_loss

    hidden = scaled_hidden_state_loss(out_s.hidden_states, out_t.hidden_states, [(0, 0), (1, 2), (2, 4)], mask)
    attention = attention_kl(out_s.attentions, out_t.attentions, [(2, 4)], mask)
    return config.alpha_hidden * hidden + config.alpha_attention * attention, hidden, attention


def deep_teacher(family: str) -> nn.Module:
    """A teacher twice as deep as `tiny_lm`: the representation terms go through the layer map."""
    torch.manual_seed(1)
    config = tiny_config(family, VOCAB)
    config.update({"num_hidden_layers": 4} if family != "gpt2" else {"n_layer": 4})
    auto = transformers.AutoModelForCausalLM if family == "gpt2" else transformers.AutoModelForMaskedLM
    return auto.from_config(config).eval()


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_representation_terms_are_added_on_top(family):
    causal = family == "gpt2"
    config = DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0, alpha_hidden=0.3, alpha_attention=0.2)
    student, teacher, batch = tiny_lm(family, 0), deep_teacher(family), lm_batch(causal)
    parts = lm.lm_objective(config, causal)(student, teacher, batch)
    inputs, mask = {k: v for k, v in batch.items() if k != "labels"}, batch["attention_mask"]
    outputs = {"output_hidden_states": True, "output_attentions": True}
    out_s, out_t = student(**inputs, **outputs), teacher(**inputs, **outputs)
    extra, hidden, attention = representation_reference(out_s, out_t, mask, config)
    ref = reference_loss(out_s.logits, out_t.logits, batch["labels"], mask, config, causal) + extra
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["hidden"], hidden.detach())
    torch.testing.assert_close(parts["attention"], attention.detach())
    assert hidden > 0 and attention > 0


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_sentence_term_alone_compares_the_last_hidden_states(family):
    from pruneofa.representation_kd import sentence_embedding_loss

    causal = family == "gpt2"
    config = DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0, alpha_sentence=2.0)
    student, teacher, batch = tiny_lm(family, 0), deep_teacher(family), lm_batch(causal)
    parts = lm.lm_objective(config, causal)(student, teacher, batch)
    inputs, mask = {k: v for k, v in batch.items() if k != "labels"}, batch["attention_mask"]
    out_s, out_t = student(**inputs, output_hidden_states=True), teacher(**inputs, output_hidden_states=True)
    sentence = sentence_embedding_loss(out_s.hidden_states[-1], out_t.hidden_states[-1], mask)
    ref = reference_loss(out_s.logits, out_t.logits, batch["labels"], mask, config, causal) + 2.0 * sentence
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-5, atol=1e-6)
    assert set(parts) == {"loss", "ce", "kd", "sentence"} and parts["sentence"] > 0


def objective_on_spans(config: DistillConfig):
    """The objective on a tiny BERT batch, and what its span terms should compare: (its parts, the loss without
    span terms, the spans' last hidden states of student and teacher, the spans' ids and mask, the batch)."""
    from pruneofa.distill import clean_spans

    student, teacher, batch = tiny_lm("bert", 0), deep_teacher("bert"), lm_batch(causal=False)
    parts = lm.lm_objective(config, causal=False)(student, teacher, batch)
    inputs, mask = {k: v for k, v in batch.items() if k != "labels"}, batch["attention_mask"]
    out_s, out_t = student(**inputs), teacher(**inputs)
    ids, span_mask = clean_spans(batch["input_ids"], batch["labels"], mask, config.span_tokens,
                                 torch.Generator().manual_seed(int(batch["input_ids"].sum())))
    s_last = student(input_ids=ids, attention_mask=span_mask, output_hidden_states=True).hidden_states[-1]
    t_last = teacher.base_model(ids, attention_mask=span_mask).last_hidden_state
    base = reference_loss(out_s.logits, out_t.logits, batch["labels"], mask, config)
    return parts, base, s_last, t_last, ids, span_mask, batch


def test_sentence_term_on_spans_embeds_clean_short_spans_apart():
    from pruneofa.representation_kd import sentence_embedding_loss

    config = DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0, alpha_sentence=2.0,
                           sentence_inputs="spans", span_tokens=(2, 5))
    parts, base, s_last, t_last, ids, span_mask, batch = objective_on_spans(config)
    assert span_mask.sum(1).max() <= 7 and ids.shape[1] < batch["input_ids"].shape[1]
    ref = base + 2.0 * sentence_embedding_loss(s_last, t_last, span_mask)
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-5, atol=1e-6)
    assert parts["sentence"] > 0 and "relation" not in parts


def test_relation_term_on_spans_adds_the_ranking_kl_of_the_same_span_embeddings():
    from pruneofa.representation_kd import mean_pooled, relational_loss, sentence_embedding_loss

    config = DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0, alpha_sentence=2.0, alpha_relation=3.0,
                           relation_temperature=0.1, sentence_inputs="spans", span_tokens=(2, 5))
    parts, base, s_last, t_last, _, span_mask, _ = objective_on_spans(config)
    relation = relational_loss(mean_pooled(s_last, span_mask), mean_pooled(t_last, span_mask), 0.1)
    ref = base + 2.0 * sentence_embedding_loss(s_last, t_last, span_mask) + 3.0 * relation
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-5, atol=1e-6)
    assert parts["relation"] > 0 and parts["sentence"] > 0


def test_relation_term_alone_adds_only_itself():
    from pruneofa.representation_kd import mean_pooled, relational_loss

    config = DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0, alpha_relation=3.0, sentence_inputs="spans",
                           span_tokens=(2, 5))
    parts, base, s_last, t_last, _, span_mask, _ = objective_on_spans(config)
    ref = base + 3.0 * relational_loss(mean_pooled(s_last, span_mask), mean_pooled(t_last, span_mask), 0.05)
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-5, atol=1e-6)
    assert "relation" in parts and "sentence" not in parts


def test_relation_term_needs_spans():
    with pytest.raises(ValueError, match="alpha_relation.*sentence_inputs=spans"):
        DistillConfig(alpha_relation=1.0)
    assert DistillConfig(alpha_relation=1.0, sentence_inputs="spans").sentence_on_spans  # alone, without the cosine


def test_cls_term_compares_the_batch_at_position_0_while_the_sentence_term_uses_spans():
    from pruneofa.representation_kd import first_token_loss

    config = DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0, alpha_cls=3.0)
    student, teacher, batch = tiny_lm("bert", 0), deep_teacher("bert"), lm_batch(causal=False)
    parts = lm.lm_objective(config, causal=False)(student, teacher, batch)
    inputs, mask = {k: v for k, v in batch.items() if k != "labels"}, batch["attention_mask"]
    out_s, out_t = student(**inputs, output_hidden_states=True), teacher(**inputs, output_hidden_states=True)
    first = first_token_loss(out_s.hidden_states[-1], out_t.hidden_states[-1])
    ref = reference_loss(out_s.logits, out_t.logits, batch["labels"], mask, config) + 3.0 * first
    torch.testing.assert_close(parts["loss"], ref, rtol=1e-5, atol=1e-6)
    assert set(parts) == {"loss", "ce", "kd", "cls"} and parts["cls"] > 0
    with_spans = config.model_copy(update={"alpha_sentence": 2.0, "sentence_inputs": "spans"})
    both = lm.lm_objective(with_spans, causal=False)(student, teacher, batch)
    torch.testing.assert_close(both["cls"], parts["cls"])
    torch.testing.assert_close(both["loss"], ref + 2.0 * both["sentence"], rtol=1e-5, atol=1e-6)


def test_spans_are_refused_for_causal_models_and_task_stages():
    from pruneofa.stages.recipes import FinetuneRecipe

    config = DistillConfig(alpha_sentence=1.0, sentence_inputs="spans")
    with pytest.raises(UserError, match="this model is causal"):
        lm.lm_objective(config, causal=True)(tiny_lm("gpt2", 0), deep_teacher("gpt2"), lm_batch(causal=True))
    with pytest.raises(ValueError, match="a task stage's sentence term compares its own batch"):
        FinetuneRecipe.model_validate({"model": "m", "output_dir": "o", "teacher": "t", "data": {"task": "sst2"},
                                       "distill": {"alpha_sentence": 1.0, "sentence_inputs": "spans"}})
    with pytest.raises(ValueError, match=r"span_tokens \[9, 3\] is not \[fewest, most\]"):
        DistillConfig(span_tokens=(9, 3))


def test_without_logit_kd_the_teacher_head_never_runs_and_only_labelled_logits_are_built(monkeypatch):
    import pruneofa.distill as distill

    config = DistillConfig(alpha_ce=0.5, alpha_kd=0.0, alpha_hidden=1.0, alpha_attention=1.0)
    student, teacher, batch = tiny_lm("bert", 0), deep_teacher("bert"), lm_batch(causal=False)
    head_calls = []
    for name, module in teacher.named_modules():
        if name and not name.startswith(teacher.base_model_prefix):  # the MLM head: transform and decoder
            module.register_forward_hook(lambda *_, name=name: head_calls.append(name))
    rows = []

    def spy(student_logits, teacher_logits, targets, *args, **kwargs):
        rows.append((teacher_logits, int((targets != -100).sum())))
        return fused(student_logits, teacher_logits, targets, *args, **kwargs)

    fused = distill.token_loss
    monkeypatch.setattr(distill, "token_loss", spy)
    parts = lm.lm_objective(config, causal=False)(student, teacher, batch)
    parts["loss"].backward()
    assert head_calls == [] and set(parts) == {"loss", "ce", "hidden", "attention"}
    assert rows == [(None, int((batch["labels"] != -100).sum()))]  # CE alone: the labelled rows, no teacher
    inputs, mask = {k: v for k, v in batch.items() if k != "labels"}, batch["attention_mask"]
    with torch.no_grad():
        outputs = {"output_hidden_states": True, "output_attentions": True}
        out_s, out_t = student(**inputs, **outputs), teacher(**inputs, **outputs)
        extra, _, _ = representation_reference(out_s, out_t, mask, config)
        ref = 0.5 * reference_loss(out_s.logits, None, batch["labels"], mask, config) + extra
    torch.testing.assert_close(parts["loss"].detach(), ref, rtol=1e-5, atol=1e-6)
    assert all(p.grad is not None for n, p in student.named_parameters() if ".attention.self." in n)


def test_trainer_loss_adds_the_representation_terms():
    config = DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0, alpha_hidden=0.3, alpha_attention=0.2)
    student, teacher, batch = tiny_lm("bert", 0).train(), deep_teacher("bert"), lm_batch(causal=False)
    for module in student.modules():  # no dropout, so that the reference forward agrees
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    kd = DistillationLoss(teacher, config).attach(student)
    labels = batch.pop("labels")
    outputs = student(**batch)  # the pre-hook asks the student for its hidden states and attention too
    assert outputs.hidden_states is not None and len(outputs.attentions) == 2
    loss = kd(outputs, labels)
    with torch.no_grad():
        out_t = teacher(**batch, output_hidden_states=True, output_attentions=True)
    extra, _, _ = representation_reference(outputs, out_t, batch["attention_mask"], config)
    ref = reference_loss(outputs.logits, out_t.logits, labels, batch["attention_mask"], config) + extra
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)


def test_a_teacher_of_another_width_is_refused_in_one_line():
    from pruneofa.errors import UserError

    torch.manual_seed(0)
    wide = transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64)
    teacher = transformers.AutoModelForMaskedLM.from_config(wide).eval()
    objective = lm.lm_objective(DistillConfig(alpha_kd=0.0, alpha_hidden=1.0), causal=False)
    with pytest.raises(UserError, match=r"hidden width to equal the teacher's \(32 vs 64\)"):
        objective(tiny_lm("bert", 0), teacher, lm_batch(causal=False))


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_evaluation_loss_is_transformers_lm_loss(family, tokenizer):
    from types import SimpleNamespace

    causal = family == "gpt2"
    torch.manual_seed(0)
    config = tiny_config(family, len(tokenizer))
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForMaskedLM
    model = auto.from_config(config).eval()
    blocks = torch.randint(1000, 2000, (6, SEQ))
    from pruneofa.train.config import TrainConfig

    recipe = SimpleNamespace(train=TrainConfig(batch_size=4, grad_accum=1, eval_batches=2, mlm_probability=0.3))
    with torch.no_grad():
        got = lm.lm_evaluator(tokenizer, causal, recipe, blocks)(model)["eval_loss"]
        collator = lm._collator(tokenizer, causal, 0.3, seed=lm.EVAL_SEED)
        expected = [model(**lm._batch(collator, blocks, idx)).loss.item() for idx in ([0, 1, 2, 3], [4, 5])]
    assert got == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_spans_run_in_groups_of_similar_length_and_give_the_one_batch_embeddings():
    from pruneofa.distill import clean_spans, span_sentence_terms
    from pruneofa.representation_kd import mean_pooled, relational_loss, sentence_embedding_loss

    config = DistillConfig(alpha_sentence=1.0, alpha_relation=1.0, relation_temperature=0.1,
                           sentence_inputs="spans", span_tokens=(1, SEQ - 2))
    student, teacher = tiny_lm("bert", 0), deep_teacher("bert")
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, VOCAB, (8, SEQ), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full_like(ids, -100)}
    widths = []
    hook = student.base_model.embeddings.register_forward_hook(lambda _m, _a, out: widths.append(out.shape[:2]))
    terms = span_sentence_terms(student, teacher, batch, config)
    hook.remove()

    spans, mask = clean_spans(ids, batch["labels"], batch["attention_mask"], config.span_tokens,
                              torch.Generator().manual_seed(int(ids.sum())))
    e_s = mean_pooled(student(input_ids=spans, attention_mask=mask, output_hidden_states=True).hidden_states[-1], mask)
    e_t = mean_pooled(teacher.base_model(spans, attention_mask=mask).last_hidden_state, mask)
    torch.testing.assert_close(terms["sentence"], sentence_embedding_loss(e_s[:, None], e_t[:, None],
                                                                          torch.ones(8, 1)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["relation"], relational_loss(e_s, e_t, 0.1), rtol=1e-5, atol=1e-6)
    assert len(widths) == config.span_groups == 4 and sum(rows * width for rows, width in widths) < mask.numel()
    assert sum(rows for rows, _ in widths) == 8


def test_span_groups_benchmark_times_each_setting(monkeypatch, tmp_path):
    """bench/span_groups_cost.py on a small batch of the offline model: both settings timed, and its --json
    file holds what it returned."""
    import json
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import span_groups_cost

    result = span_groups_cost.main(["--batch-size", "4", "--seq-len", "32", "--steps", "1", "--warmup", "0",
                                    "--json", str(tmp_path / "r.json")])
    assert set(result["step_ms"]) == {"1", "4"} and all(v > 0 for v in result["step_ms"].values())
    assert result["speedup_over_first"]["1"] == 1.0
    assert json.loads((tmp_path / "r.json").read_text()) == result


def test_kd_positions_benchmark_times_each_setting(monkeypatch, tmp_path):
    """bench/kd_positions_cost.py on a small batch of the offline model: both settings timed, the masked
    fraction is the collator's, and its --json file holds what it returned."""
    import json
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import kd_positions_cost

    result = kd_positions_cost.main(["--batch-size", "4", "--seq-len", "32", "--steps", "1", "--warmup", "0",
                                     "--json", str(tmp_path / "r.json")])
    assert result["step_ms_kd_all"] > 0 and result["step_ms_kd_masked"] > 0 and result["speedup_median_pair"] > 0
    assert 0.05 < result["masked_fraction"] < 0.3
    assert json.loads((tmp_path / "r.json").read_text()) == result


def test_distill_setting_benchmark_times_each_setting_against_the_demos(monkeypatch, tmp_path):
    """bench/distill_setting_cost.py on a small batch of the offline model: the demo's objective and each
    override timed, an unknown key refused, and its --json file holds what it returned."""
    import json
    from pathlib import Path

    import pydantic

    from pruneofa.config.loader import load_yaml
    from pruneofa.pipeline.runner import find_pipeline

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import distill_setting_cost

    assert distill_setting_cost.distill_setting("alpha_relation=10,span_groups=1").alpha_relation == 10.0
    both = distill_setting_cost.distill_setting("span_tokens=[2,9],span_groups=2")  # a list keeps its comma
    assert both.span_tokens == (2, 9) and both.span_groups == 2
    # the objective it times against is the shipped demo's prune step, whatever that recipe says today
    demo_step = load_yaml(find_pipeline("demo"))["steps"]["prune"]["overrides"]["distill"]
    assert {key: getattr(distill_setting_cost.DEMO_DISTILL, key) for key in demo_step} == {
        key: tuple(value) if isinstance(value, list) else value for key, value in demo_step.items()}
    with pytest.raises(pydantic.ValidationError):
        distill_setting_cost.distill_setting("alpha_relatoin=10")
    for bad in ("alpha_relatoin=10", "alpha_relation"):  # refused in one line, exit 2, before anything is written
        with pytest.raises(SystemExit) as exit_info:
            distill_setting_cost.main([bad, "--json", str(tmp_path / "bad.json")])
        assert exit_info.value.code == 2 and not (tmp_path / "bad.json").exists()
    result = distill_setting_cost.main(["alpha_relation=10", "--batch-size", "4", "--seq-len", "32", "--steps", "1",
                                        "--warmup", "0", "--json", str(tmp_path / "r.json")])
    assert set(result["step_ms"]) == {"demo", "alpha_relation=10"} and all(v > 0 for v in result["step_ms"].values())
    assert result["cost_over_demo"]["demo"] == 1.0
    assert json.loads((tmp_path / "r.json").read_text()) == result
