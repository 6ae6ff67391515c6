"""An attention implementation whose `output_attentions` are the attention distribution itself.

The attention-KD term compares attention distributions, which transformers' default attention
(sdpa) does not return at all, and which its `eager` attention returns after dropout: in training
some probabilities are then 0 and the rest scaled by 1/(1 − p), so no KL against them is finite.
The implementation registered here runs the model's own eager attention without dropout and returns
those probabilities; the dropout is applied to the attention output, so training is unchanged (at
the cost of a second probabilities·values product per layer while dropout is on). That dropout is the
layer's own `nn.Dropout` module where it has one of the same rate (BERT's `attention.self.dropout`),
so `train.cpu_dropout=packed`, which swaps those modules, reaches this path too.

transformers does not write the attention implementation into config.json: a saved model loads
with the default attention again.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.bert.modeling_bert import eager_attention_forward as standard_eager_attention

from pruneofa.errors import UserError

NAME = "pruneofa_eager_probabilities"


def attention_returning_probabilities(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                      attention_mask: torch.Tensor | None, dropout: float = 0.0,
                                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention output, attention probabilities before dropout), from the model's own eager attention."""
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", standard_eager_attention)
    output, probabilities = eager(module, query, key, value, attention_mask, dropout=0.0, **kwargs)
    if dropout > 0 and module.training:
        # grouped-query attention: several query heads share one value head
        values = value.repeat_interleave(probabilities.shape[1] // value.shape[1], dim=1)
        own = getattr(module, "dropout", None)  # the layer's module: train.cpu_dropout's packed masks reach here
        drop = own if isinstance(own, nn.Dropout) and own.p == dropout else functools.partial(F.dropout, p=dropout)
        dropped = drop(probabilities).to(values.dtype)
        output = torch.matmul(dropped, values).transpose(1, 2).contiguous()
    return output, probabilities


def return_attention_probabilities(model: nn.Module) -> None:
    """Switch `model` (a DDP wrapper's module) to that attention; nothing to do when it already runs it."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, attention_returning_probabilities)
        AttentionMaskInterface.register(NAME, eager_mask)  # the additive mask that eager attention takes
    if getattr(inner.config, "_attn_implementation", None) == NAME:
        return
    if hasattr(inner, "set_attn_implementation"):
        inner.set_attn_implementation(NAME)
    if getattr(inner.config, "_attn_implementation", None) != NAME:
        raise UserError(f"{type(inner).__name__} cannot switch its attention implementation, so it cannot return "
                        "the attention probabilities distill.alpha_attention compares", "set distill.alpha_attention=0")
