"""ONNX export with torch.onnx's dynamo exporter (opset 18), for onnxruntime on CPU.

transformers models are exported through `OnnxEntry`, a small wrapper with explicit tensor inputs
(input_ids, attention_mask[, token_type_ids]) and one tensor output: calling the model with its
many optional keyword arguments confuses the exporters. Batch and sequence axes are dynamic.

int8=True writes the QDQ format from the QAT state: every QAT Linear becomes `QDQLinear` (int8
weight initializer -> DequantizeLinear with the QAT weight scale; QuantizeLinear -> DequantizeLinear
on its input with the observer's scale and zero point); everything else stays float.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from pruneofa.errors import UserError
from pruneofa.modeldir import load_model
from pruneofa.quantization.checkpoint import plain_model_copy
from pruneofa.sparsity.masks import fold_masks
from pruneofa.quantization.qat import own_parametrized_class, qat_layers, quantization_state, quantized_weights

OPSET = 18  # the dynamo exporter's lowest supported opset
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxEntry(nn.Module):
    """model(input_ids, attention_mask, token_type_ids) -> logits (or last_hidden_state)."""

    def __init__(self, model: nn.Module, output_name: str):
        super().__init__()
        self.model = model
        self.output_name = output_name

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **extra)
        return outputs[self.output_name]


def qdq_model_copy(model: nn.Module) -> nn.Module:
    """A copy of a QAT model with every QAT Linear replaced by a `QDQLinear`, other masks folded."""
    layers = qat_layers(model)
    if not layers:
        raise UserError("int8 ONNX export needs a QAT model", "call prepare_qat and train (or calibrate) first")
    weights, state = quantized_weights(model), quantization_state(model)
    unobserved = [n for n, m in layers.items() if hasattr(m, "input_quant") and state[n]["input_scale"] is None]
    if unobserved:
        raise UserError(f"the input observer of {unobserved[0]} has seen no data",
                        "train (or calibrate) the QAT model before int8 export")
    from pruneofa.export.qdq_linear import QDQLinear

    export = copy.deepcopy(model)
    for module in export.modules():
        own_parametrized_class(module)  # so that folding the copy's masks leaves `model` intact
    for name, module in layers.items():
        q, scale = weights[f"{name}.weight"]
        if not isinstance(module, nn.Linear) or q.shape != (module.out_features, module.in_features):
            raise UserError(f"int8 ONNX export supports nn.Linear layers only ({name} is {type(module).__name__})",
                            "exclude the layer from quantization")
        s = state[name]
        replacement = QDQLinear(
            q, scale, module.bias,
            None if s["input_scale"] is None else float(s["input_scale"]),
            None if s["input_zero_point"] is None else int(s["input_zero_point"]),
        )
        parent, _, child = name.rpartition(".")
        setattr(export.get_submodule(parent) if parent else export, child, replacement)
    return fold_masks(export)


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress and warns about things that are fine here (deprecated pytree
    names, shared dynamic-axis names); keep the caller's output clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _input_names(model: nn.Module, tokenizer_or_config: Any) -> list[str]:
    names = getattr(tokenizer_or_config, "model_input_names", None)
    if names is None:  # a config, or nothing: token types when the model has a token-type embedding
        config = tokenizer_or_config if tokenizer_or_config is not None else model.config
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if getattr(config, "type_vocab_size", 0) else [])
    return [n for n in INPUTS if n in names]


def example_inputs(config: Any, names: list[str], batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    """Random token ids and a mask with padding, so that the trace cannot specialise on all-ones."""
    g = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(0, config.vocab_size, (batch, length), generator=g)}
    inputs["attention_mask"] = torch.ones(batch, length, dtype=torch.long)
    inputs["attention_mask"][0, length // 2 :] = 0
    inputs["token_type_ids"] = torch.zeros(batch, length, dtype=torch.long)
    inputs["token_type_ids"][:, length // 2 :] = 1 if getattr(config, "type_vocab_size", 1) > 1 else 0
    return {n: inputs[n] for n in names}


def export_onnx(model_or_dir: nn.Module | str | Path, tokenizer_or_config: Any = None,
                out_path: str | Path = "model.onnx", int8: bool = False) -> Path:
    """Write an ONNX model with inputs `input_ids`, `attention_mask` (and `token_type_ids` when the
    tokenizer produces them, or the config has token types) of shape (batch, sequence), and output
    `logits` (`last_hidden_state` for bare encoders). int8=True: QDQ from the QAT scales."""
    model, _ = load_model(model_or_dir)
    export_model = qdq_model_copy(model) if int8 else plain_model_copy(model, keep_quantized_values=True)
    export_model.eval()
    config = model.config
    names = _input_names(model, tokenizer_or_config)
    inputs = example_inputs(config, names)
    with torch.no_grad():
        probe = export_model(**inputs, return_dict=True)
    output_name = "logits" if "logits" in probe else "last_hidden_state"
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=1, max=config.max_position_embeddings)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    from pruneofa.export.onnx_ops import TRANSLATIONS

    try:
        with _quiet():
            torch.onnx.export(
                OnnxEntry(export_model, output_name).eval(), (), out, kwargs=inputs, dynamo=True,
                opset_version=OPSET, input_names=names, output_names=[output_name],
                dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
                custom_translation_table=TRANSLATIONS, external_data=False, optimize=True,
            )
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; one line for the user
        raise UserError(f"ONNX export of {type(model).__name__} failed: {str(err).splitlines()[0]}",
                        "report it with the model config") from err
    onnx.checker.check_model(str(out))
    return out
