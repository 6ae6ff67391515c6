"""Knowledge distillation inside a transformers `Trainer`: the loss is passed as `compute_loss_func`,
and the teacher runs from a forward pre-hook on the student, so the Trainer itself is not subclassed.
The terms are those of `pruneofa.distill`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pruneofa.distill import (
    DistillConfig,
    applicable_config,
    distillation_loss,
    prepare_for_distillation,
    representation_outputs,
    run_teacher,
    token_distillation_loss,
    with_representation_terms,
)
from pruneofa.models import is_causal_lm
from pruneofa.token_loss import LogitSource


class DistillationLoss:
    """KD for a transformers `Trainer`, passed as `compute_loss_func`:

        kd = DistillationLoss(teacher).attach(model)
        trainer = Trainer(model=model, ..., compute_loss_func=kd)

    `attach` registers a forward pre-hook on the student that runs the frozen teacher on the same
    inputs during training (and asks the student for the representations the terms compare), so the
    Trainer's own loss plumbing stays untouched. A language-model teacher runs without its output
    layer (`forward_deferring_logits`): its logits are built a chunk of tokens at a time inside the loss.
    """

    def __init__(self, teacher: nn.Module, config: DistillConfig | None = None, **kwargs: Any):
        self.teacher = teacher.eval().requires_grad_(False)
        self.config = config or DistillConfig(**kwargs)
        if self.config.sentence_on_spans:
            raise ValueError("DistillationLoss compares the Trainer's own batch: use sentence_inputs='batch'")
        self._teacher_out: Any = None
        self._teacher_logits: LogitSource | None = None
        self._mask: torch.Tensor | None = None

    def attach(self, student: nn.Module) -> "DistillationLoss":
        self._causal = is_causal_lm(student.config)
        prepare_for_distillation(student, self.teacher, self.config)
        student.register_forward_pre_hook(self._run_teacher, with_kwargs=True)
        return self

    @torch.no_grad()
    def _run_teacher(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if not module.training or not self.config.uses_teacher:
            self._teacher_out = self._teacher_logits = None
            return None
        inputs = {k: v for k, v in kwargs.items() if k not in ("labels", "num_items_in_batch")}
        self._teacher_out, self._teacher_logits = run_teacher(self.teacher, self.config, *args, **inputs)
        self._mask = kwargs.get("attention_mask")
        return args, {**kwargs, **representation_outputs(self.config)}

    def __call__(self, outputs: Any, labels: torch.Tensor | None, num_items_in_batch: Any = None) -> torch.Tensor:
        teacher_out, teacher_logits = self._teacher_out, self._teacher_logits
        self._teacher_out = self._teacher_logits = None
        config = applicable_config(self.config, teacher_out is not None)
        # the Trainer pops `labels` before the forward when a compute_loss_func is set
        own_loss = outputs.get("loss") is not None
        if not own_loss and labels is None:
            raise ValueError("DistillationLoss needs labels: keep the Trainer's default label_names")
        if outputs.logits.dim() == 3 and not own_loss:
            parts = token_distillation_loss(LogitSource(outputs.logits), teacher_logits, labels, config, self._mask,
                                            self._causal, num_items_in_batch)
            return with_representation_terms(parts, outputs, teacher_out, config, self._mask)["loss"]
        if teacher_logits is not None:
            teacher_out["logits"] = teacher_logits.materialize()
        return distillation_loss(outputs, teacher_out, config, self._mask, labels=None if own_loss else labels,
                                 causal=self._causal, num_items_in_batch=num_items_in_batch)["loss"]
