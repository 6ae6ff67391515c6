"""`pruneofa bench --decode`: a causal LM's two phases of generation, on engines that keep a KV cache.

- prefill: `batch` x `seq_len` random tokens into an empty cache (transformers' DynamicCache), logits of
  the last position only (what `generate` asks for: logits_to_keep=1).
- decode: one more token per sequence after those `seq_len` cached tokens: the per-token step of
  generation. After each step the cache is cut back to `seq_len` tokens (`DynamicCache.crop`, a view),
  so that every round times the same step.
Both calls return the logits they computed, which are checked against torch's. The engines are those
whose model keeps transformers' forward (and so its cache and causal attention): torch, torch-int8 and
the runtime's sparse engines. The inputs hold seq_len + 1 tokens: the last one is the decoded token.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from pruneofa.bench.engines import ENGINES, REFERENCE, load_engine

PHASES = ("prefill", "decode")
DECODE_ENGINES = {name: ENGINES[name] for name in (REFERENCE, "torch-int8", "sparse", "sparse-int8")}
INPUTS_DECODE = ("random token ids; prefill: batch x seq_len tokens into an empty KV cache, logits of the last "
                 "position; decode: one new token per sequence after seq_len cached tokens (seq/s = tokens/s)")


class DecodeEngine:
    """A causal LM (plain, or a pruneofa.runtime model) bound to one batch, one call per phase."""

    def __init__(self, model: Any):
        self.model = model

    def bind(self, inputs: dict[str, torch.Tensor], phase: str) -> Callable[[], torch.Tensor]:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if phase == "prefill":
            return lambda: self._forward(ids[:, :-1], mask[:, :-1], self._cache())
        cache = self._cache()
        self._forward(ids[:, :-1], mask[:, :-1], cache)
        new = ids[:, -1:]

        def step() -> torch.Tensor:
            logits = self._forward(new, mask, cache)
            cache.crop(-1)
            return logits

        return step

    def _cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, cache: Any) -> torch.Tensor:
        with torch.no_grad():
            return self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True,
                              logits_to_keep=1).logits


def load_decoder(name: str, artifact_path, threads: int, measure_tokens: int = 128) -> DecodeEngine:
    return DecodeEngine(load_engine(name, artifact_path, threads, measure_tokens).model)
