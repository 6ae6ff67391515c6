"""Knowledge distillation: the student learns the frozen teacher's outputs and representations.

    L = α_ce · CE(student, labels) + α_kd · T² · KL(softmax(t / T) ‖ softmax(s / T))
        + α_hidden · L_hid(hidden states) + α_attention · L_att(attention distributions)
        + α_sentence · L_sent(mean-pooled last hidden states) + α_cls · L_cls(last hidden state at [CLS])

KL is summed over the classes (vocabulary) and averaged over the positions that count: for a
language model every non-padding token (the attention mask), for a classifier every example.
T² keeps the gradient scale of the soft targets independent of T (Hinton et al. 2015). L_hid and
L_att, L_sent, L_cls, and the layer map that lets a student of another depth use them, are in
`pruneofa.representation_kd`. Each term is computed only when its weight is > 0, and without a
teacher term (or a teacher) the loss is the student's own loss alone.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from pruneofa.attention_probabilities import return_attention_probabilities
from pruneofa.deferred_logits import forward_deferring_logits
from pruneofa.representation_kd import (
    attention_kl,
    attention_pairs,
    check_same,
    clean_spans,
    first_token_loss,
    hidden_pairs,
    layer_map,
    mean_cosine_distance,
    mean_pooled,
    relational_loss,
    scaled_hidden_state_loss,
    sentence_embedding_loss,
)
from pruneofa.config.base import StrictModel
from pruneofa.errors import UserError
from pruneofa.models import is_causal_lm
from pruneofa.token_loss import IGNORE, LogitSource, token_loss


class DistillConfig(StrictModel):
    alpha_ce: float = Field(0.5, ge=0.0, description="weight of the student's own loss")
    alpha_kd: float = Field(0.5, ge=0.0, description="weight of the KD term on the logits; 0 turns it off")
    temperature: float = Field(2.0, gt=0.0)
    kd_positions: Literal["all", "masked"] = Field(
        "all", description="the tokens whose logits a language model's KD compares: every non-padding one (the "
        "paper) or only those with a CE target (an MLM's masked ~15%: about a seventh of the output layer's work)")
    alpha_hidden: float = Field(0.0, ge=0.0, description="weight of the per-layer hidden-state error, scaled by "
                                "the teacher layer's mean square (needs equal widths)")
    hidden_layers: list[Annotated[int, Field(ge=0)] | None] | None = Field(
        None, description="teacher hidden state matched to each student one (0: embeddings, i: layer i; null: "
        "none), one entry per student hidden state; default ⌊i·L_teacher/L_student⌋")
    alpha_attention: float = Field(0.0, ge=0.0, description="weight of the KL between teacher and student attention "
                                   "distributions, MiniLM-style (needs equal head counts)")
    alpha_sentence: float = Field(0.0, ge=0.0, description="weight of 1 - cos between the student's and the "
                                  "teacher's sentence embeddings (mean-pooled last hidden states): keeps a "
                                  "sentence-embedding model's geometry while the LM objective trains it")
    alpha_cls: float = Field(0.0, ge=0.0, description="weight of 1 - cos between the student's and the teacher's "
                             "last hidden state at position 0 ([CLS], what a classification head reads), on the "
                             "training batch; encoders only")
    alpha_relation: float = Field(0.0, ge=0.0, description="weight of the KL between the teacher's and the student's "
                                  "in-batch similarity distributions of the spans' sentence embeddings (how each "
                                  "span ranks the others: what retrieval reads); needs sentence_inputs=spans")
    relation_temperature: float = Field(0.05, gt=0.0, description="τ of the relation term's softmax over cosines")
    sentence_inputs: Literal["batch", "spans"] = Field(
        "batch", description="what the sentence term embeds: the training batch as it is, or (language-model "
        "stages) clean short spans cut from it, sentence-length and unmasked, run through both models apart")
    span_tokens: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = Field(
        (4, 32), description="[fewest, most] tokens of a span (between its [CLS] and [SEP])")
    span_groups: int = Field(
        4, ge=1, description="forwards the spans run in, grouped by length and each padded to its own longest: "
        "the same embeddings for fewer tokens (spans of 4-126 tokens pad to 1.16x their tokens in 4, 1.8x in 1)")
    attention_layers: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, min_length=1, description="student layers (1-based) whose attention is distilled, each from the "
        "teacher layer hidden_layers maps it to; default the last")

    @model_validator(mode="after")
    def _span_range(self) -> "DistillConfig":
        if self.span_tokens[0] > self.span_tokens[1]:
            raise ValueError(f"distill.span_tokens {list(self.span_tokens)} is not [fewest, most]")
        if self.alpha_relation > 0 and self.sentence_inputs != "spans":
            raise ValueError("distill.alpha_relation compares the spans' embeddings: set distill.sentence_inputs=spans "
                             "(language-model stages), or distill.alpha_relation=0")
        return self

    @property
    def sentence_on_batch(self) -> bool:
        """Whether the sentence term compares the batch's own forward (not spans run apart)."""
        return self.alpha_sentence > 0 and self.sentence_inputs == "batch"

    @property
    def sentence_on_spans(self) -> bool:
        """Whether the sentence term compares clean spans cut from an MLM batch, run through both models apart."""
        return (self.alpha_sentence > 0 or self.alpha_relation > 0) and self.sentence_inputs == "spans"

    @property
    def uses_teacher(self) -> bool:
        """Whether any term needs the teacher."""
        return self.alpha_kd > 0 or self.represents

    @property
    def represents(self) -> bool:
        """Whether a representation term is on (the models return hidden states or attentions)."""
        return (self.alpha_hidden > 0 or self.alpha_attention > 0 or self.alpha_sentence > 0 or self.alpha_cls > 0
                or self.alpha_relation > 0)

    @property
    def reads_batch_hidden_states(self) -> bool:
        """Whether a term compares the hidden states of the batch's own forward."""
        return self.alpha_hidden > 0 or self.sentence_on_batch or self.alpha_cls > 0


CE_ONLY = DistillConfig(alpha_ce=1.0, alpha_kd=0.0)


def applicable_config(config: DistillConfig, teacher_ran: bool) -> DistillConfig:
    """The weights that apply: `config` when a teacher ran for a term that is on, else the student's own loss alone."""
    return config if teacher_ran and config.uses_teacher else CE_ONLY


def representation_outputs(config: DistillConfig) -> dict[str, bool]:
    """The forward's keyword arguments that return what the representation terms compare."""
    return {**({"output_hidden_states": True} if config.reads_batch_hidden_states else {}),
            **({"output_attentions": True} if config.alpha_attention > 0 else {})}


def _unwrapped(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def prepare_for_distillation(student: nn.Module, teacher: nn.Module | None, config: DistillConfig) -> None:
    """Where the models are built: refuse a pair the representation terms cannot match (widths, head
    counts, layer lists), and when the attention term is on switch both to an attention that returns
    its probabilities (`pruneofa.attention_probabilities`). Doing it twice changes nothing."""
    if teacher is None or not config.represents:
        return
    s, t = _unwrapped(student).config, teacher.config
    if config.sentence_on_spans and is_causal_lm(s):
        raise UserError("distill.sentence_inputs=spans cuts its spans from masked-LM blocks, and this model is causal",
                        "use distill.sentence_inputs=batch, or distill.alpha_sentence=0")
    if config.alpha_cls > 0 and is_causal_lm(s):
        raise UserError("distill.alpha_cls distils the state at position 0, which a causal model computes from "
                        "that token alone", "set distill.alpha_cls=0 for a causal model")
    depths = getattr(s, "num_hidden_layers", None), getattr(t, "num_hidden_layers", None)
    if None not in depths:  # an unusual config is left to the loss, which checks the tensors themselves
        mapping = layer_map(*depths, config.hidden_layers)
        if config.alpha_attention > 0:
            attention_pairs(mapping, config.attention_layers)
    for key, what, attribute in (("alpha_hidden", "hidden width", "hidden_size"),
                                 ("alpha_sentence", "hidden width", "hidden_size"),
                                 ("alpha_cls", "hidden width", "hidden_size"),
                                 ("alpha_attention", "number of attention heads", "num_attention_heads")):
        sizes = getattr(s, attribute, None), getattr(t, attribute, None)
        if getattr(config, key) > 0 and None not in sizes:
            check_same(what, *sizes, key)
    if config.alpha_attention > 0:
        for model in (student, teacher):
            return_attention_probabilities(model)


def run_teacher(teacher: nn.Module, config: DistillConfig, *args: Any,
                **inputs: Any) -> tuple[Any, LogitSource | None]:
    """The frozen teacher's outputs (with the representations the terms compare) and its logit source.

    With α_kd = 0 its logits serve no term: only its base model runs, the LM or task head never does,
    and the source is None.
    """
    inputs = {**inputs, **representation_outputs(config)}
    if config.alpha_kd > 0:
        return forward_deferring_logits(teacher, *args, **inputs)
    return getattr(teacher, "base_model", teacher)(*args, **inputs), None


def kd_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), summed over the last dim, averaged over counted positions.

    `mask` (broadcastable to the leading dims, e.g. the attention mask) says which positions count.
    """
    rows = student_logits.shape[:-1]
    weight = (torch.ones(rows, device=student_logits.device) if mask is None
              else mask.to(torch.float32).expand(rows))
    no_targets = torch.full(rows, IGNORE, device=student_logits.device)
    scale = temperature**2 / float(weight.sum().clamp_min(1.0))
    kd, _, _ = token_loss(LogitSource(student_logits), LogitSource(teacher_logits.detach()), no_targets, weight,
                          0.0, scale, temperature)
    return kd


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Each position's causal-LM target, the next token's label; the last position has none."""
    return torch.cat([labels[..., 1:], torch.full_like(labels[..., :1], IGNORE)], dim=-1)


def token_distillation_loss(
    student: LogitSource, teacher: LogitSource | None, labels: torch.Tensor, config: DistillConfig,
    mask: torch.Tensor | None = None, causal: bool = False, num_items_in_batch: Any = None,
) -> dict[str, torch.Tensor]:
    """α_ce · CE + α_kd · T² · KL over a language model's tokens, both from the same logits, a chunk
    of tokens at a time (`pruneofa.token_loss`): no [tokens, vocab] temporary is ever built.

    CE counts the labelled positions (labels != -100: the masked tokens of an MLM; for a causal LM
    each position predicts the next token's label), averaged over their number or over
    `num_items_in_batch` (the Trainer's count across accumulated micro-batches). KD counts every
    position the attention `mask` keeps, or with `kd_positions: masked` only the labelled ones,
    averaged over their number. `config` holds the weights that apply (`applicable_config`:
    CE_ONLY when no teacher ran). With α_kd = 0 only the labelled positions' logits are built and
    `teacher` is not used (pass None). Returns {"loss", "ce"[, "kd"]}.
    """
    targets = next_token_targets(labels) if causal else labels
    # counts as Python numbers: exact scales whatever the logits' dtype (one device sync per batch)
    n_labelled = float(num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE).sum().clamp_min(1))
    if config.alpha_kd == 0:
        ce_scale = config.alpha_ce / n_labelled
        loss, ce_sum, _ = token_loss(student, None, targets, None, ce_scale, 0.0, config.temperature)
        return {"loss": loss, "ce": ce_sum / n_labelled}
    if teacher is None:
        raise ValueError("distill.alpha_kd > 0 needs the teacher's logits; pass CE_ONLY when no teacher ran")
    rows = labels.shape
    weight = torch.ones(rows, device=labels.device) if mask is None else mask.to(torch.float32).expand(rows)
    if config.kd_positions == "masked":
        weight = weight * (targets != IGNORE)
    n_counted = float(weight.sum().clamp_min(1.0))
    kd_scale = config.temperature**2 / n_counted
    loss, ce_sum, kd_sum = token_loss(student, teacher, targets, weight, config.alpha_ce / n_labelled,
                                      config.alpha_kd * kd_scale, config.temperature)
    return {"loss": loss, "ce": ce_sum / n_labelled, "kd": kd_sum * kd_scale}


def distillation_loss(
    student_out: Any, teacher_out: Any | None, config: DistillConfig, mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None, causal: bool = False, num_items_in_batch: Any = None,
) -> dict[str, torch.Tensor]:
    """Combine the student's own loss with KD against `teacher_out`.

    The student's loss is `student_out.loss`, or, when `labels` are given, computed here from its
    logits. For a language model pass `labels` and run the student without them: CE and KD then
    come from the same logits a chunk of tokens at a time (`token_distillation_loss`), and no
    [tokens, vocab] log-softmax is kept for backward (transformers' own LM loss keeps one).
    `mask` is the attention mask: the tokens that count for token-level KD and the representation
    terms (a classifier's KD has one distribution per example and ignores it).

    Returns {"loss", "ce"[, "kd", "hidden", "attention", "sentence", "cls"]}; "loss" is what to backpropagate.
    """
    config = applicable_config(config, teacher_out is not None)
    token_level = student_out.logits is not None and student_out.logits.dim() == 3
    if labels is not None and token_level:
        teacher = LogitSource(teacher_out.logits) if config.alpha_kd > 0 else None
        parts = token_distillation_loss(LogitSource(student_out.logits), teacher, labels, config, mask, causal,
                                        num_items_in_batch)
    else:
        ce = student_out.loss if labels is None else task_loss(student_out.logits, labels, causal, num_items_in_batch)
        parts = {"loss": config.alpha_ce * ce, "ce": ce}
        if config.alpha_kd > 0:
            kd_mask = mask if token_level else None
            kd = kd_divergence(student_out.logits, teacher_out.logits, config.temperature, kd_mask)
            parts.update(loss=parts["loss"] + config.alpha_kd * kd, kd=kd)
    return with_representation_terms(parts, student_out, teacher_out, config, mask)


def with_representation_terms(parts: dict[str, torch.Tensor], student_out: Any, teacher_out: Any | None,
                              config: DistillConfig, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`parts` with α_hidden · L_hid, α_attention · L_att, α_sentence · L_sent and α_cls · L_cls added
    to its "loss" (each when a teacher ran and its weight is > 0) and reported as "hidden", "attention",
    "sentence" and "cls"; every part but "loss" detached (they are for logging)."""
    if teacher_out is not None and (config.reads_batch_hidden_states or config.alpha_attention > 0):
        # a model's depth, from what it returned: hidden states 0..L or the attention of layers 1..L
        hidden_states = config.reads_batch_hidden_states
        name, extra = ("hidden_states", 1) if hidden_states else ("attentions", 0)
        s_reps, t_reps = _returned(student_out, name), _returned(teacher_out, name)
        mapping = layer_map(len(s_reps) - extra, len(t_reps) - extra, config.hidden_layers)
        loss = parts["loss"]
        if config.alpha_hidden > 0:
            hidden = scaled_hidden_state_loss(s_reps, t_reps, hidden_pairs(mapping), mask)
            loss, parts = loss + config.alpha_hidden * hidden, {**parts, "hidden": hidden}
        if config.alpha_attention > 0:
            attention = attention_kl(_returned(student_out, "attentions"), _returned(teacher_out, "attentions"),
                                     attention_pairs(mapping, config.attention_layers), mask)
            loss, parts = loss + config.alpha_attention * attention, {**parts, "attention": attention}
        if config.sentence_on_batch:
            sentence = sentence_embedding_loss(s_reps[-1], t_reps[-1], mask)
            loss, parts = loss + config.alpha_sentence * sentence, {**parts, "sentence": sentence}
        if config.alpha_cls > 0:
            first = first_token_loss(s_reps[-1], t_reps[-1])
            loss, parts = loss + config.alpha_cls * first, {**parts, "cls": first}
        parts = {**parts, "loss": loss}
    return {name: value if name == "loss" else value.detach() for name, value in parts.items()}


def span_groups(mask: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """Row indices of `mask` in up to `groups` runs of similar length (slices of the rows sorted by length)."""
    order = torch.argsort(mask.sum(1), stable=True)
    return [run for run in order.tensor_split(groups) if len(run)]


def span_sentence_terms(student: nn.Module, teacher: nn.Module, batch: dict[str, torch.Tensor],
                        config: DistillConfig) -> dict[str, torch.Tensor]:
    """L_sent ("sentence") and, with alpha_relation, L_rel ("relation") on clean short spans of a masked-LM
    batch (`clean_spans`), each model run on them apart: the student without its output layer, the frozen
    teacher's base model without gradients. The spans go through in `span_groups` of similar length, each
    padded only to its own longest (`distill.span_groups`): the same embeddings as one padded batch, for
    fewer tokens. Weighted by
    the caller."""
    # the spans are a function of the batch alone, so a resumed run cuts the same ones
    generator = torch.Generator().manual_seed(int(batch["input_ids"].sum()))
    ids, mask = (t.to(batch["input_ids"].device) for t in clean_spans(
        batch["input_ids"].cpu(), batch["labels"].cpu(), batch["attention_mask"].cpu(), config.span_tokens, generator))
    pooled_s, pooled_t, rows = [], [], []
    for group in span_groups(mask, config.span_groups):
        width = int(mask[group].sum(1).max())
        group_ids, group_mask = ids[group, :width], mask[group, :width]
        out_s, _ = forward_deferring_logits(student, input_ids=group_ids, attention_mask=group_mask,
                                            output_hidden_states=True)
        with torch.no_grad():
            t_last = getattr(teacher, "base_model", teacher)(input_ids=group_ids, attention_mask=group_mask)
        s_last, t_last = out_s.hidden_states[-1], t_last.last_hidden_state
        if config.alpha_sentence > 0:
            check_same("hidden width", s_last.shape[-1], t_last.shape[-1], "alpha_sentence")
        pooled_s.append(mean_pooled(s_last.float(), group_mask))  # pooled once for both terms
        pooled_t.append(mean_pooled(t_last.float(), group_mask))
        rows.append(group)
    back = torch.argsort(torch.cat(rows))  # the spans' own order again
    e_s, e_t, terms = torch.cat(pooled_s)[back], torch.cat(pooled_t)[back], {}
    if config.alpha_sentence > 0:
        terms["sentence"] = mean_cosine_distance(e_s, e_t)
    if config.alpha_relation > 0:  # similarities only: the widths may differ
        terms["relation"] = relational_loss(e_s, e_t, config.relation_temperature)
    return terms


def _returned(out: Any, name: str) -> tuple[torch.Tensor, ...]:
    values = getattr(out, name, None)
    if not values or values[0] is None:  # sdpa attention returns none
        raise ValueError(f"the model returned no {name}: run it with representation_outputs(config), "
                         "after prepare_for_distillation")
    return values


def task_loss(logits: torch.Tensor, labels: torch.Tensor, causal: bool, num_items_in_batch: Any = None) -> torch.Tensor:
    """The model's own loss from logits: token CE (of the next token for causal LMs), class CE, or
    MSE for regression."""
    if logits.dim() == 3:
        return token_distillation_loss(LogitSource(logits), None, labels, CE_ONLY, causal=causal,
                                       num_items_in_batch=num_items_in_batch)["loss"]
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    counted = labels != IGNORE
    loss = F.cross_entropy(logits[counted].float(), labels[counted], reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else counted.sum().clamp_min(1))
