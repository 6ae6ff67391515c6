"""`QuantConfig`: which Linear layers get 8-bit quantization-aware training, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pruneofa.config.base import StrictModel
from pruneofa.sparsity.config import DEFAULT_INCLUDE

# The pruner's layers (Linear layers inside the repeated blocks, the pooler) plus the task heads,
# as in Q8BERT: every fully-connected layer. Embeddings, LayerNorm and softmax stay float.
DEFAULT_QAT_INCLUDE = [
    *DEFAULT_INCLUDE,
    r"(^|\.)classifier(\.|$)",  # BERT / RoBERTa sequence and token classification heads
    r"(^|\.)qa_outputs$",
    r"(^|\.)score$",
    r"(^|\.)cls\.predictions\.transform\.",  # BERT masked-LM transform (not its decoder)
    r"(^|\.)lm_head\.dense$",  # RoBERTa masked-LM transform
]
# Masked-LM decoders share their weight with the word embeddings, which stay float.
DEFAULT_QAT_EXCLUDE = [r"(^|\.)decoder$", r"(^|\.)lm_head$"]


class QuantConfig(StrictModel):
    bits: Literal[8] = Field(8, description="weights int8 symmetric, activations uint8 asymmetric")
    per_channel: bool = Field(False, description="one weight scale per output channel (paper: per tensor)")
    activation_momentum: float = Field(
        0.9, ge=0.0, lt=1.0, description="EMA observer: stat <- momentum * stat + (1 - momentum) * batch stat"
    )
    quantize_activations: bool = Field(True, description="fake-quantize the input of every selected layer")
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_QAT_INCLUDE))
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_QAT_EXCLUDE))
