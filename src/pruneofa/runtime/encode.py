"""Sentence embeddings from a runtime model: tokenize, run the encoder (the base model: an MLM or
classification head is not run), pool the token states over the attention mask, L2-normalize.

The pooling is the model directory's sentence-transformers configuration (`modeldir.read_pooling`:
mean, cls or max, and whether a Normalize module follows); a plain model directory pools by the
mean, unnormalized, as sentence-transformers does for a transformers checkpoint without modules.json.
The pooling follows sentence-transformers' `Pooling` module, so the same encoder gives the same
embeddings in both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pruneofa.modeldir import SentencePooling, is_sentence_transformers_dir, read_pooling
from pruneofa.representation_kd import mean_pooled
from pruneofa.runtime.fast_path import BertFastPath


def pooling_of(model_dir: str | Path | None) -> SentencePooling:
    """The directory's sentence-transformers pooling, else mean pooling without normalization."""
    return read_pooling(model_dir) if is_sentence_transformers_dir(model_dir) else SentencePooling()


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: SentencePooling) -> torch.Tensor:
    """[B, S, H] token states and the [B, S] 0/1 mask -> [B, H] sentence embeddings."""
    if pooling.mode == "mean":
        pooled = mean_pooled(hidden, attention_mask)
    elif pooling.mode == "cls":  # the first attended token (left padding included)
        first = attention_mask.to(torch.int).argmax(dim=1)
        pooled = hidden[torch.arange(hidden.shape[0]), first]
    elif pooling.mode == "max":
        pooled = hidden.masked_fill(attention_mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
    else:
        raise ValueError(f"unknown pooling {pooling.mode!r}")
    return F.normalize(pooled, p=2, dim=1) if pooling.normalize else pooled


class SentenceEncoder:
    """Built once per runtime model by its first `encode`: the base model's call (the BERT fast path
    when it applies), the tokenizer and the pooling."""

    def __init__(self, model: nn.Module, tokenizer: Any, pooling: SentencePooling):
        import inspect

        self.base = model.base_model
        self.fast_path = BertFastPath.build(self.base)
        self.accepted = set(inspect.signature(self.base.forward).parameters)
        self.tokenizer, self.pooling = tokenizer, pooling
        limits = [n for n in (pooling.max_seq_length, getattr(model.config, "max_position_embeddings", None),
                              getattr(tokenizer, "model_max_length", None)) if n]
        self.max_length = min(limits) if limits else None

    def __call__(self, sentences: list[str], batch_size: int) -> torch.Tensor:
        chunks = []
        for start in range(0, len(sentences), batch_size):
            batch = self.tokenizer(sentences[start:start + batch_size], padding=True, truncation=self.max_length is not None,
                                   max_length=self.max_length, return_tensors="pt")
            kwargs = {k: v for k, v in batch.items() if k in self.accepted}
            out = self.fast_path((), kwargs) if self.fast_path is not None else None
            if out is None:
                out = self.base(**kwargs)
            chunks.append(pool(out.last_hidden_state, batch["attention_mask"], self.pooling))
        return torch.cat(chunks) if chunks else torch.empty(0, self.base.config.hidden_size)
