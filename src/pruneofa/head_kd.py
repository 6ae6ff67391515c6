"""Knowledge distillation for the task heads that `distillation_loss` does not cover: extractive QA
(start and end positions) and regression (one output, no distribution to soften)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pruneofa.distill import DistillConfig, applicable_config, kd_divergence, with_representation_terms


def span_kd(out_s, out_t, temperature: float) -> torch.Tensor:
    """QA: the mean of the start- and end-position KD (each T²·KL over a window's tokens)."""
    return 0.5 * (kd_divergence(out_s.start_logits, out_t.start_logits, temperature)
                  + kd_divergence(out_s.end_logits, out_t.end_logits, temperature))


def regression_kd(out_s, out_t, temperature: float) -> torch.Tensor:
    """Regression: one output has no distribution to soften (its KL is 0), so match the teacher's value."""
    return F.mse_loss(out_s.logits.float(), out_t.logits.float())


def combine_kd(out_s, out_t, cfg: DistillConfig, mask, kd_term: Callable) -> dict[str, torch.Tensor]:
    """`distillation_loss` with another KD term: α_ce·CE + α_kd·KD [+ the representation terms]."""
    cfg = applicable_config(cfg, out_t is not None)
    parts = {"loss": cfg.alpha_ce * out_s.loss, "ce": out_s.loss}
    if cfg.alpha_kd > 0:
        kd = kd_term(out_s, out_t, cfg.temperature)
        parts.update(loss=parts["loss"] + cfg.alpha_kd * kd, kd=kd)
    return with_representation_terms(parts, out_s, out_t, cfg, mask)
