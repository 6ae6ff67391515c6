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

from pruneofa.sparsity.config import StrictModel


class DistillConfig(StrictModel):
    alpha_ce: float = Field(0.5, ge=0.0, description="weight of the student's own loss")
    alpha_kd: float = Field(0.5, ge=0.0, description="weight of the KD term; 0 turns distillation off")
    temperature: float = Field(2.0, gt=0.0)
    alpha_hidden: float = Field(0.0, ge=0.0, description="weight of an MSE between hidden states (needs equal widths)")


KD_CHUNK_ROWS = 256  # positions per chunk: bounds the vocabulary-sized temporaries of the KD term


def _kd_rows(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    """Weighted sum over rows of KL(softmax(t/T) ‖ softmax(s/T))."""
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    per_row = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="none").sum(-1)
    return (per_row * weight).sum()


class _ChunkedKL(torch.autograd.Function):
    """Σ_rows w · KL(softmax(t/T) ‖ softmax(s/T)), computed KD_CHUNK_ROWS rows at a time.

    For an LM the softmaxes are vocabulary-sized for every token; autograd would keep several of
    them alive until the backward pass. Here nothing but the inputs is kept, and the backward pass
    writes the closed-form gradient  ∂/∂s = w · (softmax(s/T) − softmax(t/T)) / T  chunk by chunk
    into one buffer.
    """

    @staticmethod
    def forward(ctx, student, teacher, weight, temperature):
        ctx.save_for_backward(student, teacher, weight)
        ctx.temperature = temperature
        total = student.new_zeros((), dtype=torch.float32)
        for start in range(0, student.shape[0], KD_CHUNK_ROWS):
            rows = slice(start, start + KD_CHUNK_ROWS)
            total += _kd_rows(student[rows], teacher[rows], weight[rows], temperature)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        student, teacher, weight = ctx.saved_tensors
        temperature = ctx.temperature
        grad = torch.empty_like(student)
        for start in range(0, student.shape[0], KD_CHUNK_ROWS):
            rows = slice(start, start + KD_CHUNK_ROWS)
            diff = F.softmax(student[rows].float() / temperature, -1) - F.softmax(teacher[rows].float() / temperature, -1)
            grad[rows] = (diff * (weight[rows, None] * grad_total / temperature)).to(grad.dtype)
        return grad, None, None, None


def kd_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), summed over the last dim, averaged over counted positions.

    `mask` (broadcastable to the leading dims, e.g. the attention mask) says which positions count.
    """
    vocab = student_logits.shape[-1]
    student, teacher = student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab).detach()
    weight = (torch.ones(student_logits.shape[:-1], device=student.device) if mask is None
              else mask.to(torch.float32).expand(student_logits.shape[:-1])).reshape(-1)
    return temperature**2 * _ChunkedKL.apply(student, teacher, weight, temperature) / weight.sum().clamp_min(1.0)


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
    student_out: Any, teacher_out: Any | None, config: DistillConfig, mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Combine the student's own loss (`student_out.loss`) with KD against `teacher_out`.

    Returns {"loss", "ce", "kd"[, "hidden"]}; "loss" is what to backpropagate.
    """
    ce = student_out.loss
    parts = {"ce": ce.detach()}
    if teacher_out is None or (config.alpha_kd == 0 and config.alpha_hidden == 0):
        parts["loss"] = ce
        return parts
    kd = kd_divergence(student_out.logits, teacher_out.logits, config.temperature, mask)
    loss = config.alpha_ce * ce + config.alpha_kd * kd
    parts["kd"] = kd.detach()
    if config.alpha_hidden > 0:
        hidden = hidden_state_mse(student_out.hidden_states, teacher_out.hidden_states, mask)
        loss = loss + config.alpha_hidden * hidden
        parts["hidden"] = hidden.detach()
    parts["loss"] = loss
    return parts


class DistillationLoss:
    """KD for a transformers `Trainer`, passed as `compute_loss_func`:

        kd = DistillationLoss(teacher).attach(model)
        trainer = Trainer(model=model, ..., compute_loss_func=kd)

    `attach` registers a forward pre-hook on the student that runs the frozen teacher on the same
    inputs during training, so the Trainer's own loss plumbing stays untouched.
    """

    def __init__(self, teacher: nn.Module, config: DistillConfig | None = None, **kwargs: Any):
        self.teacher = teacher.eval().requires_grad_(False)
        self.config = config or DistillConfig(**kwargs)
        self._teacher_out: Any = None
        self._mask: torch.Tensor | None = None

    def attach(self, student: nn.Module) -> "DistillationLoss":
        from pruneofa.models import is_causal_lm

        self._causal = is_causal_lm(student.config)
        student.register_forward_pre_hook(self._run_teacher, with_kwargs=True)
        return self

    @torch.no_grad()
    def _run_teacher(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not module.training:
            self._teacher_out = None
            return
        inputs = {k: v for k, v in kwargs.items() if k not in ("labels", "num_items_in_batch")}
        self._teacher_out = self.teacher(*args, **inputs)
        self._mask = kwargs.get("attention_mask")

    def __call__(self, outputs: Any, labels: torch.Tensor | None, num_items_in_batch: Any = None) -> torch.Tensor:
        # the Trainer pops `labels` before the forward when a compute_loss_func is set
        if outputs.get("loss") is None:
            if labels is None:
                raise ValueError("DistillationLoss needs labels: keep the Trainer's default label_names")
            outputs["loss"] = task_loss(outputs.logits, labels, self._causal, num_items_in_batch)
        teacher_out, self._teacher_out = self._teacher_out, None
        mask = self._mask if outputs.logits.dim() == 3 else None
        return distillation_loss(outputs, teacher_out, self.config, mask)["loss"]


def task_loss(logits: torch.Tensor, labels: torch.Tensor, causal: bool, num_items_in_batch: Any = None) -> torch.Tensor:
    """The model's own loss from logits: token CE (shifted for causal LMs), class CE, or MSE for regression."""
    if logits.dim() == 2 and logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    if causal:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    # only the labelled positions (15% for MLM): a full-vocabulary log-softmax over every token would
    # cost as much memory as the logits themselves
    counted = labels != -100
    loss = F.cross_entropy(logits[counted].float(), labels[counted], reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else counted.sum().clamp_min(1))
