"""Dropout that costs a CPU what it costs a GPU: masks drawn from packed random words.

A CPU draws torch's dropout mask one Bernoulli sample per element (`aten::bernoulli_`: a tenth of the
CPU time of the demo's prune step on the AMD host, by torch's profiler), and SDPA has no CPU kernel
with dropout, so it falls back to its math path: one attention layer of that step's 16 x 128 tokens
took 59 ms forward with dropout against 11 ms without (bench/attention_dropout_cost.py, 2 threads).

Here one 64-bit random word gives the keep/drop decision of four elements: each 16-bit quarter u is
kept when u >= round(p * 2^16), so the drop rate is p to within 2^-17, and the kept values are
scaled by 1 / (1 - p16) with p16 that quantised rate, which keeps every element's expectation
exact. The words come from torch's default generator, so a seeded run is reproducible as before.
What changes is the draw, not the distribution: a recipe run with `train.cpu_dropout=packed` is
another sample of the same objective, not the same numbers as with `torch`.

Two places take it: every `nn.Dropout` module (swapped for `PackedDropout`, a subclass that keeps
`p`, which attention layers read), and attention, through an implementation registered with
transformers that computes softmax(QKᵀ·scale + mask), packed dropout and ·V itself while the model
trains with dropout on a CPU, and hands everything else to transformers' own SDPA function.
GPUs keep torch's kernels (fused dropout in SDPA, a Philox generator).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

log = logging.getLogger(__name__)

ATTENTION = "pruneofa_sdpa_packed_dropout"
LEVELS = 1 << 16  # keep/drop thresholds per 16-bit quarter of a random word


def quantised_rate(p: float) -> float:
    """The drop rate the packed mask realises for a requested `p`: round(p · 2^16) / 2^16."""
    return round(p * LEVELS) / LEVELS


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool mask of `shape`, True with probability 1 - quantised_rate(p), four elements per 64-bit draw."""
    n = math.prod(shape)
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    quarters = words.view(torch.int16)[:n].view(shape)
    # int16 quarters are uniform on [-2^15, 2^15): shift the threshold into that range
    return quarters >= round(p * LEVELS) - (LEVELS >> 1)


def packed_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """x · mask / (1 − p16): inverted dropout with the packed mask (p16 = quantised_rate(p))."""
    rate = quantised_rate(p)
    if rate <= 0.0:
        return x
    if rate >= 1.0:
        return torch.zeros_like(x)
    scale = torch.tensor(1.0 / (1.0 - rate), dtype=x.dtype, device=x.device)
    return x * torch.where(keep_mask(x.shape, p, x.device), scale, 0.0)


class PackedDropout(nn.Dropout):
    """`nn.Dropout` whose mask is drawn packed on a CPU (torch's own kernel elsewhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        return packed_dropout(x, self.p)


def attention_with_packed_dropout(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                  attention_mask: torch.Tensor | None, dropout: float = 0.0,
                                  scaling: float | None = None, is_causal: bool | None = None,
                                  **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except in CPU training with dropout, where the probabilities are
    computed here (SDPA would take its math path there anyway) and dropped with a packed mask."""
    if dropout == 0.0 or not module.training or query.device.type != "cpu" \
            or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query * scale, key.transpose(-1, -2))  # scaled on the smaller side
    q_len, k_len = scores.shape[-2:]
    if attention_mask is None and q_len > 1 and (is_causal if is_causal is not None else
                                                 getattr(module, "is_causal", False)):
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True: attend. The most negative float, as eager attention
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probabilities = packed_dropout(torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype), dropout)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None


def use_packed_dropout(model: nn.Module) -> int:
    """Swap `model`'s `nn.Dropout` modules for `PackedDropout` and, where it runs transformers' SDPA
    attention, switch it to `attention_with_packed_dropout`. Returns the dropout modules swapped."""
    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, PackedDropout(child.p, child.inplace).train(child.training))
                swapped += 1
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        if ATTENTION not in AttentionInterface._global_mapping:
            AttentionInterface.register(ATTENTION, attention_with_packed_dropout)
            AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks SDPA takes, for both paths
        try:
            model.set_attn_implementation(ATTENTION)
        except (ValueError, AttributeError) as error:  # a model that fixes its attention keeps torch's dropout
            log.info("attention keeps torch's dropout: %s", error)
    return swapped
