"""Knowledge distillation: the student learns the frozen teacher's output distribution.

    L = α_ce · CE(student, labels) + α_kd · T² · KL(softmax(t / T) ‖ softmax(s / T)) [+ α_hid · MSE(h_s, h_t)]

KL is summed over the classes (vocabulary) and averaged over the positions that count: for a
language model every non-padding token (the attention mask), for a classifier every example.
T² keeps the gradient scale of the soft targets independent of T (Hinton et al. 2015).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pruneofa.deferred_logits import forward_deferring_logits
from pruneofa.sparsity.config import StrictModel
from pruneofa.token_loss import IGNORE, LogitSource, token_loss


class DistillConfig(StrictModel):
    alpha_ce: float = Field(0.5, ge=0.0, description="weight of the student's own loss")
    alpha_kd: float = Field(0.5, ge=0.0, description="weight of the KD term; 0 turns distillation off")
    temperature: float = Field(2.0, gt=0.0)
    alpha_hidden: float = Field(0.0, ge=0.0, description="weight of an MSE between hidden states (needs equal widths)")


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
    position the attention `mask` keeps. Without a teacher (or with α_kd = α_hidden = 0) the loss is
    the CE alone. Returns {"loss", "ce"[, "kd"]}.
    """
    targets = next_token_targets(labels) if causal else labels
    # counts as Python numbers: exact scales whatever the logits' dtype (one device sync per batch)
    n_labelled = float(num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE).sum().clamp_min(1))
    if teacher is None or (config.alpha_kd == 0 and config.alpha_hidden == 0):
        loss, ce_sum, _ = token_loss(student, None, targets, None, 1.0 / n_labelled, 0.0, config.temperature)
        return {"loss": loss, "ce": ce_sum / n_labelled}
    rows = labels.shape
    weight = torch.ones(rows, device=labels.device) if mask is None else mask.to(torch.float32).expand(rows)
    n_counted = float(weight.sum().clamp_min(1.0))
    kd_scale = config.temperature**2 / n_counted
    loss, ce_sum, kd_sum = token_loss(student, teacher, targets, weight, config.alpha_ce / n_labelled,
                                      config.alpha_kd * kd_scale, config.temperature)
    return {"loss": loss, "ce": ce_sum / n_labelled, "kd": kd_sum * kd_scale}


def hidden_state_mse(student_hidden: tuple[torch.Tensor, ...], teacher_hidden: tuple[torch.Tensor, ...],
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over layers of the MSE between matching hidden states (over counted positions)."""
    losses = []
    for hs, ht in zip(student_hidden, teacher_hidden, strict=True):
        err = (hs.float() - ht.float()).pow(2).mean(-1)
        if mask is not None:
            w = mask.to(err.dtype)
            losses.append((err * w).sum() / w.sum().clamp_min(1.0))
        else:
            losses.append(err.mean())
    return torch.stack(losses).mean()


def distillation_loss(
    student_out: Any, teacher_out: Any | None, config: DistillConfig, mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None, causal: bool = False, num_items_in_batch: Any = None,
) -> dict[str, torch.Tensor]:
    """Combine the student's own loss with KD against `teacher_out`.

    The student's loss is `student_out.loss`, or, when `labels` are given, computed here from its
    logits. For a language model pass `labels` and run the student without them: CE and KD then
    come from the same logits a chunk of tokens at a time (`token_distillation_loss`), and no
    [tokens, vocab] log-softmax is kept for backward (transformers' own LM loss keeps one).

    Returns {"loss", "ce"[, "kd", "hidden"]}; "loss" is what to backpropagate.
    """
    if labels is not None and student_out.logits.dim() == 3:
        teacher = None if teacher_out is None else LogitSource(teacher_out.logits)
        parts = token_distillation_loss(LogitSource(student_out.logits), teacher, labels, config, mask, causal,
                                        num_items_in_batch)
    else:
        ce = student_out.loss if labels is None else task_loss(student_out.logits, labels, causal, num_items_in_batch)
        parts = {"loss": ce, "ce": ce}
        if teacher_out is not None and (config.alpha_kd > 0 or config.alpha_hidden > 0):
            kd = kd_divergence(student_out.logits, teacher_out.logits, config.temperature, mask)
            parts.update(loss=config.alpha_ce * ce + config.alpha_kd * kd, kd=kd)
    return with_hidden_term(parts, student_out, teacher_out, config, mask)


def with_hidden_term(parts: dict[str, torch.Tensor], student_out: Any, teacher_out: Any | None, config: DistillConfig,
                     mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`parts` with α_hidden · MSE(hidden states) added to its "loss" when a teacher ran and α_hidden > 0;
    every part but "loss" detached (they are for logging)."""
    if teacher_out is not None and config.alpha_hidden > 0:
        hidden = hidden_state_mse(student_out.hidden_states, teacher_out.hidden_states, mask)
        parts = {**parts, "loss": parts["loss"] + config.alpha_hidden * hidden, "hidden": hidden}
    return {name: value if name == "loss" else value.detach() for name, value in parts.items()}


class DistillationLoss:
    """KD for a transformers `Trainer`, passed as `compute_loss_func`:

        kd = DistillationLoss(teacher).attach(model)
        trainer = Trainer(model=model, ..., compute_loss_func=kd)

    `attach` registers a forward pre-hook on the student that runs the frozen teacher on the same
    inputs during training, so the Trainer's own loss plumbing stays untouched. A language-model
    teacher runs without its output layer (`forward_deferring_logits`): its logits are built a chunk
    of tokens at a time inside the loss.
    """

    def __init__(self, teacher: nn.Module, config: DistillConfig | None = None, **kwargs: Any):
        self.teacher = teacher.eval().requires_grad_(False)
        self.config = config or DistillConfig(**kwargs)
        self._teacher_out: Any = None
        self._teacher_logits: LogitSource | None = None
        self._mask: torch.Tensor | None = None

    def attach(self, student: nn.Module) -> "DistillationLoss":
        from pruneofa.models import is_causal_lm

        self._causal = is_causal_lm(student.config)
        student.register_forward_pre_hook(self._run_teacher, with_kwargs=True)
        return self

    @torch.no_grad()
    def _run_teacher(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not module.training:
            self._teacher_out = self._teacher_logits = None
            return
        inputs = {k: v for k, v in kwargs.items() if k not in ("labels", "num_items_in_batch")}
        self._teacher_out, self._teacher_logits = forward_deferring_logits(self.teacher, *args, **inputs)
        self._mask = kwargs.get("attention_mask")

    def __call__(self, outputs: Any, labels: torch.Tensor | None, num_items_in_batch: Any = None) -> torch.Tensor:
        teacher_out, teacher_logits = self._teacher_out, self._teacher_logits
        self._teacher_out = self._teacher_logits = None
        # the Trainer pops `labels` before the forward when a compute_loss_func is set
        own_loss = outputs.get("loss") is not None
        if not own_loss and labels is None:
            raise ValueError("DistillationLoss needs labels: keep the Trainer's default label_names")
        if outputs.logits.dim() == 3 and not own_loss:
            teacher = teacher_logits if teacher_out is not None else None
            parts = token_distillation_loss(LogitSource(outputs.logits), teacher, labels, self.config, self._mask,
                                            self._causal, num_items_in_batch)
            return with_hidden_term(parts, outputs, teacher_out, self.config, self._mask)["loss"]
        if teacher_out is not None and teacher_logits is not None:
            teacher_out["logits"] = teacher_logits.materialize()
        mask = self._mask if outputs.logits.dim() == 3 else None
        return distillation_loss(outputs, teacher_out, self.config, mask, labels=None if own_loss else labels,
                                 causal=self._causal, num_items_in_batch=num_items_in_batch)["loss"]


CE_ONLY = DistillConfig(alpha_ce=1.0, alpha_kd=0.0)


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
