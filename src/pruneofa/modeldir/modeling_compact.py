"""Compacted transformer encoders and GPT-2: attention layers with fewer heads and FFNs with
fewer neurons than their config's dense shape, for stock transformers.

pruneofa's `export --format hf --compact` copies this file beside a compacted checkpoint and names
its classes in the config's `auto_map`, so the checkpoint loads with torch and transformers alone:

    AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=...)   # the user passes True
    AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=...)                 # GPT-2

Why a file at all: transformers' attention gives every head hidden_size / num_attention_heads
channels and all heads together hidden_size, and transformers 5 has no `prune_heads`, so a layer
with fewer heads of the same width has no stock config. The config keeps the dense shape the model
was compacted from; `config.compact` names the layers to rebuild smaller (`linear_shapes`: module
name under the base model -> [out, in]; a Linear, or GPT-2's Conv1D, which stores its weight as
[in, out]) and the head counts and widths to set on the attention modules (`module_attributes`;
GPT-2's `split_size` is the width of each of Q, K and V in its fused `c_attn`). The forward passes
are transformers' own, unchanged: they read the head count and width from the attention modules,
and the KV cache takes each layer's own head count.

This file must import nothing but torch and transformers.
"""

from __future__ import annotations

from typing import Any

import transformers
from torch import nn
from transformers.pytorch_utils import Conv1D

COMPACT_KEY = "compact"
AUTO_CLASSES = {  # architecture suffix -> the Auto class that loads it
    "Model": "AutoModel",
    "LMHeadModel": "AutoModelForCausalLM",
    "ForMaskedLM": "AutoModelForMaskedLM",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
    "ForMultipleChoice": "AutoModelForMultipleChoice",
    "ForPreTraining": "AutoModelForPreTraining",
}


def resized(layer: nn.Module, out_features: int, in_features: int) -> nn.Module:
    """A layer of `layer`'s kind (Linear or Conv1D), bias, device and dtype at another size; its
    weights are placeholders for the caller to fill."""
    if isinstance(layer, Conv1D):  # always has a bias
        return Conv1D(out_features, in_features).to(device=layer.weight.device, dtype=layer.weight.dtype)
    return nn.Linear(in_features, out_features, bias=layer.bias is not None,
                     device=layer.weight.device, dtype=layer.weight.dtype)


def shrink(base_model: nn.Module, compact: dict[str, Any]) -> None:
    """Rebuild the layers listed in `compact` at their smaller shapes and set the attention modules'
    head counts. The new layers are uninitialised: the checkpoint's weights fill them."""
    for name, (out_features, in_features) in compact["linear_shapes"].items():
        parent, _, attr = name.rpartition(".")
        new = resized(base_model.get_submodule(name), out_features, in_features)
        setattr(base_model.get_submodule(parent) if parent else base_model, attr, new)
    for name, attributes in compact["module_attributes"].items():
        module = base_model.get_submodule(name)
        for key, value in attributes.items():
            setattr(module, key, value)


def _config_class(stock: type) -> type:
    return type(f"Compact{stock.__name__}", (stock,), {"model_type": f"compact_{stock.model_type}",
                                                      "__module__": __name__})


def _model_class(stock: type, config_class: type) -> type:
    def __init__(self, config, *args, **kwargs):
        stock.__init__(self, config, *args, **kwargs)
        shrink(self.base_model, getattr(config, COMPACT_KEY))

    return type(f"Compact{stock.__name__}", (stock,), {"config_class": config_class, "__init__": __init__,
                                                      "__module__": __name__})


def __getattr__(name: str) -> type:
    """`Compact<X>` for any transformers config or model class X, made on first use (the checkpoint's
    `auto_map` names them): a subclass whose construction shrinks the layers that `config.compact` lists."""
    stock = getattr(transformers, name.removeprefix("Compact"), None) if name.startswith("Compact") else None
    if not isinstance(stock, type):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if issubclass(stock, transformers.PretrainedConfig):
        made = _config_class(stock)
    elif issubclass(stock, transformers.PreTrainedModel) and isinstance(stock.config_class, type):
        made = _model_class(stock, __getattr__(f"Compact{stock.config_class.__name__}"))
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = made  # one class per name: the model classes and their config class stay consistent
    return made
