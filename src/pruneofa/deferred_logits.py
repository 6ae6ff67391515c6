"""Run a language model without its output layer, so that its logits can be built a chunk at a time.

An LM's last step maps every token's features to a vocabulary-sized row of logits: [tokens, vocab]
values, 250 MB in fp32 at 16 x 128 tokens and a 30k vocabulary, more than the rest of a small
model's activations. `pruneofa.token_loss` needs only a chunk of those rows at a time, so the
layer is skipped here and its input, weight and bias are handed over instead. The layer is swapped
for a pass-through module for the one call (as module-swapping quantization does), so no forward
is patched and the layer object itself is never changed.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from torch import nn

from pruneofa.token_loss import LogitSource

log = logging.getLogger(__name__)
_NOT_SKIPPABLE: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()  # models whose logits are more than the layer's output
# model -> (parent, attribute) of its output layer: found once, not by walking every module on each step
_OWNERS: "weakref.WeakKeyDictionary[nn.Module, tuple[nn.Module, str]]" = weakref.WeakKeyDictionary()


def forward_deferring_logits(model: nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, LogitSource]:
    """`model(*args, **kwargs)` and where its logits come from.

    When the model's last step is a plain linear output layer (`get_output_embeddings()`), that
    layer is skipped: the returned outputs have `logits` None and the source is the layer's input
    with its weight and bias. Otherwise (no such layer, a layer with its own forward or hooks, or
    logits post-processed after it, e.g. soft-capped) the model runs as usual and the source is its
    logits; a model found to post-process is remembered and not tried again.
    """
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    layer = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if not _skippable(layer) or inner in _NOT_SKIPPABLE:
        out = model(*args, **kwargs)
        return out, LogitSource(out.logits)
    parent, name = _owner(inner, layer)
    passthrough = _PassThrough()
    setattr(parent, name, passthrough)
    try:
        out = model(*args, **kwargs)
    finally:
        setattr(parent, name, layer)
    inputs = passthrough.inputs
    if len(inputs) == 1 and out.logits is inputs[0]:
        out["logits"] = None
        return out, LogitSource(inputs[0], layer.weight, layer.bias)
    log.warning("%s changes its logits after the output layer: computing them in full", type(inner).__name__)
    _NOT_SKIPPABLE.add(inner)
    out = model(*args, **kwargs)
    return out, LogitSource(out.logits)


def _skippable(layer: nn.Module | None) -> bool:
    # a subclass with its own forward (fake quantization, ...) or a hook would be bypassed by the skip
    return (isinstance(layer, nn.Linear) and type(layer).forward is nn.Linear.forward
            and not (layer._forward_hooks or layer._forward_pre_hooks))


class _PassThrough(nn.Module):
    """Stands in for the output layer: returns the features it gets and keeps them."""

    def __init__(self):
        super().__init__()
        self.inputs: list[Any] = []

    def forward(self, features):
        self.inputs.append(features)
        return features


def _owner(model: nn.Module, layer: nn.Module) -> tuple[nn.Module, str]:
    """The module that holds `layer` as an attribute, and the attribute's name."""
    cached = _OWNERS.get(model)
    if cached is not None and getattr(cached[0], cached[1], None) is layer:  # still there: not re-tied
        return cached
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is layer:
                _OWNERS[model] = (parent, name)
                return parent, name
    raise ValueError(f"{type(model).__name__}'s output layer is not one of its modules")
