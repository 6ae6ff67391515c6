"""Quantization-aware training on a (possibly pruned) transformers model.

    pruner = Pruner(model, method="lock")     # sparse transfer: lock the zero pattern first
    model = prepare_qat(model, QuantConfig())  # then add int8 fake quantization
    ... train as usual ...
    quantized_weights(model)                   # {"...query.weight": (int8, scale)} for export
    strip_qat(model)                           # back to float weights

Order matters: the weight fake-quant is appended to the weight's parametrizations, so when the
pruning mask is already there the layer computes fake_quant(mask * original) and every pruned
weight quantizes to exactly 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from pruneofa.errors import UserError
from pruneofa.quantization.config import QuantConfig
from pruneofa.quantization.fake_quant import quantize_symmetric
from pruneofa.quantization.modules import ActivationFakeQuant, WeightFakeQuant, quantize_input_hook
from pruneofa.sparsity.masks import is_transposed
from pruneofa.sparsity.selection import select_prunable


def _weight_fake_quant(module: nn.Module) -> WeightFakeQuant | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, WeightFakeQuant)), None)


def is_qat(module: nn.Module) -> bool:
    return _weight_fake_quant(module) is not None


def qat_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module of every layer carrying weight fake quantization."""
    return {name: m for name, m in model.named_modules() if is_qat(m)}


def prepare_qat(model: nn.Module, config: QuantConfig | dict[str, Any] | None = None, **overrides: Any) -> nn.Module:
    """Add int8 fake quantization to the selected Linear layers, in place; returns `model`.

    Idempotent per layer: a layer that already has fake quantization is left as it is."""
    if config is None or isinstance(config, dict):
        config = QuantConfig(**{**(config or {}), **overrides})
    elif overrides:
        config = QuantConfig.model_validate({**config.model_dump(), **overrides})
    layers = select_prunable(model, config.include, config.exclude)
    if not layers:
        raise UserError(
            "no layer matches quantization.include/quantization.exclude",
            "check the regexes against the module names (pruneofa inspect lists them)",
        )
    for module in layers.values():
        if is_qat(module):
            continue
        axis = 1 if is_transposed(module) else 0  # output channels
        parametrize.register_parametrization(module, "weight", WeightFakeQuant(module.weight, config.per_channel, axis))
        if config.quantize_activations:
            # observers follow the layer's mode: a model prepared in eval does not observe until trained
            observer = ActivationFakeQuant(config.activation_momentum).train(module.training)
            module.input_quant = observer.to(module.weight.device)
            module.register_forward_pre_hook(quantize_input_hook, with_kwargs=True)
    return model


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[dict[str, Any]]) -> nn.Module:
    """Run `batches` (keyword inputs of the model) through the model in eval mode while the input
    observers update: static post-training calibration, or a warm start for the ranges before QAT.
    Dropout stays off; the observers are frozen again afterwards."""
    model.eval()
    observers = [m for m in model.modules() if isinstance(m, ActivationFakeQuant)]
    if not observers:
        raise UserError("the model has no input observers", "call prepare_qat(model) first")
    try:
        for observer in observers:
            observer.train()
        for inputs in batches:
            model(**inputs)
    finally:
        for observer in observers:
            observer.eval()
    return model


def own_parametrized_class(module: nn.Module) -> None:
    """Give a parametrized module a class of its own.

    torch swaps a parametrized module's class for a generated subclass holding the property, and
    `copy.deepcopy` shares that class between the copies. `remove_parametrizations` deletes the
    property from the class, which would break every other copy; with its own class first, a copy
    can be stripped or folded safely."""
    if parametrize.is_parametrized(module):
        cls = module.__class__
        module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))


def _remove_input_quant(module: nn.Module) -> None:
    # torch keeps hooks in a private dict; removing ours by identity works on deep copies too,
    # where the RemovableHandle returned at registration would point at the original module.
    for hook_id, hook in list(module._forward_pre_hooks.items()):
        if hook is quantize_input_hook:
            del module._forward_pre_hooks[hook_id]
            module._forward_pre_hooks_with_kwargs.pop(hook_id, None)
    if "input_quant" in module._modules:
        del module.input_quant


@torch.no_grad()
def strip_qat(model: nn.Module, keep_quantized_values: bool = False) -> nn.Module:
    """Remove all fake quantization, in place; pruning masks stay.

    keep_quantized_values=False leaves the float weights QAT trained; True bakes in the dequantized
    values q · s, so the float model has exactly the weights the int8 model computes with."""
    for module in qat_layers(model).values():
        baked = module.weight.detach().clone() if keep_quantized_values else None
        chain = module.parametrizations.weight
        if len(chain) == 1:
            own_parametrized_class(module)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            if baked is not None:
                module.weight.copy_(baked)
        else:
            index = next(i for i, p in enumerate(chain) if isinstance(p, WeightFakeQuant))
            del chain[index]  # ModuleList renumbers the rest; the mask keeps working
            if baked is not None:
                # baked is 0 wherever the mask is, so mask * baked == baked
                chain.original.copy_(baked)
        _remove_input_quant(module)
    return model


def quantization_state(model: nn.Module) -> dict[str, dict[str, torch.Tensor | None]]:
    """Per QAT layer: weight scale (() or (channels,)), and the input observer's range, scale and
    zero point (None when activations are not quantized)."""
    state = {}
    for name, module in qat_layers(model).items():
        _ = module.weight  # evaluating the weight refreshes its scale
        entry: dict[str, torch.Tensor | None] = {"weight_scale": _weight_fake_quant(module).scale.detach().clone()}
        observer = getattr(module, "input_quant", None)
        for key in ("min", "max", "scale", "zero_point"):
            value = None
            if observer is not None and bool(observer.observed):
                value = getattr(observer, "min_val" if key == "min" else "max_val" if key == "max" else key)
                value = value.detach().clone()
            entry[f"input_{key}"] = value
        state[name] = entry
    return state


@torch.no_grad()
def quantized_weights(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """"<layer>.weight" -> (int8 weight in the layer's own layout, scale) for every QAT layer.

    The layer's weight is exactly q · s, so q = round(weight / s) recovers q whatever
    parametrizations come before or after the fake quantization."""
    result = {}
    for name, module in qat_layers(model).items():
        fq = _weight_fake_quant(module)
        weight = module.weight.detach()  # also refreshes fq.scale
        result[f"{name}.weight"] = (quantize_symmetric(weight, fq.scale, fq.axis), fq.scale.detach().clone())
    return result


def qat_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Flat name -> tensor of the QAT state, with names independent of how many parametrizations a
    layer has: "<layer>.weight_scale" and "<layer>.input_quant.<buffer>"."""
    buffers = {}
    for name, module in qat_layers(model).items():
        _ = module.weight  # evaluating the weight refreshes its scale
        buffers[f"{name}.weight_scale"] = _weight_fake_quant(module).scale.detach().clone()
        observer = getattr(module, "input_quant", None)
        if observer is not None:
            for key, value in observer.named_buffers():
                buffers[f"{name}.input_quant.{key}"] = value.detach().clone()
    return buffers


@torch.no_grad()
def load_qat_buffers(model: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    """Inverse of `qat_buffers` on a model prepared with the same layers."""
    expected = qat_buffers(model)
    if set(expected) != set(buffers):
        missing = sorted(set(expected) - set(buffers)) or ["-"]
        extra = sorted(set(buffers) - set(expected)) or ["-"]
        raise UserError(
            f"quantization state does not match the model's QAT layers (missing {missing[0]}, unexpected {extra[0]})",
            "load it into a model prepared with the same quantization config",
        )
    for name, module in qat_layers(model).items():
        _weight_fake_quant(module).scale.copy_(buffers[f"{name}.weight_scale"])
        observer = getattr(module, "input_quant", None)
        if observer is not None:
            for key, value in observer.named_buffers():
                value.copy_(buffers[f"{name}.input_quant.{key}"])
