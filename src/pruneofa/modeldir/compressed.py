"""Compressed sparse checkpoints: `compressed.safetensors` + config.json (+ tokenizer) in a directory.

Every 2-D weight of a Linear layer is stored as a bitmask plus its non-zero values (or densely when
that is smaller, e.g. an unpruned head); everything else (embeddings, LayerNorm, biases) densely.

    dtype="fp32"  values as fp32: the round trip is bit for bit (zeros come back as +0.0)
    dtype="fp16"  values and dense tensors as fp16: load gives exactly the fp16-cast weights
    dtype="int8"  Linear weights as int8 q with fp32 scale(s): load gives exactly q · s. A QAT model
                  keeps its own int8 weights and scales; other Linear layers of the QAT selection are
                  quantized here, symmetric, per tensor (or per channel)

`dense_dtype` ("fp32" | "fp16") chooses the storage of the dense tensors (default: fp16 for
dtype="fp16", fp32 otherwise); `int8_embeddings=True` stores embedding tables as int8 with one
scale per row (lossy, exact to q · s like the rest).

At 90% sparsity, int8 Linear weights take ceil(n/8) + 0.1 n bytes against 4 n in fp32: 17.8x less.

`codec` ("zstd" default | "lzma" | "none") entropy codes every stored tensor, losslessly (coding.py),
and stores the positions of the non-zeros as zero runs instead of a bitmask (gaps.py): a coded
90%-sparse int8 Linear weight takes about 0.13 byte per weight, 30x less than fp32. "none" writes
the uncoded bitmask file of format version 1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from pruneofa.errors import UserError
from pruneofa.modeldir import bitmask, coding, gaps
from pruneofa.modeldir.compressed_read import _file_of, load_compressed
from pruneofa.modeldir.container import read_container, write_container
from pruneofa.modeldir.layout import COMPRESSED_FILE, write_tokenizer
from pruneofa.modeldir.loading import load_model
from pruneofa.modeldir.sentence_transformers_dir import copy_sentence_transformers_files
from pruneofa.quantization.checkpoint import plain_model_copy
from pruneofa.quantization.config import QuantConfig
from pruneofa.quantization.fake_quant import quantize_symmetric, symmetric_scale
from pruneofa.quantization.qat import quantized_weights
from pruneofa.sparsity.masks import PRUNABLE_TYPES, is_transposed
from pruneofa.sparsity.selection import select_prunable

FLOAT_STORAGE = {"fp32": torch.float32, "fp16": torch.float16}


def _roles(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """State-dict name of each weight -> ("linear" | "embedding", its module)."""
    roles = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, PRUNABLE_TYPES) and module.weight.dim() == 2:
            roles[f"{prefix}weight"] = ("linear", module)
        elif isinstance(module, nn.Embedding):
            roles[f"{prefix}weight"] = ("embedding", module)
    return roles


def _int8_of(name, tensor, module, role, qat_int8, ptq_names, per_channel, int8_embeddings):
    """(q, scale, axis) when `name` is stored as int8, else None."""
    if name in qat_int8:
        q, scale = qat_int8[name]
        return q, scale, 1 if is_transposed(module) else 0
    if role == "linear" and name in ptq_names:
        axis = 1 if is_transposed(module) else 0
        scale = symmetric_scale(tensor, per_channel, axis)
        return quantize_symmetric(tensor, scale, axis), scale, axis
    if role == "embedding" and int8_embeddings:
        scale = symmetric_scale(tensor, per_channel=True, axis=0)  # one scale per token row
        return quantize_symmetric(tensor, scale, 0), scale, 0
    return None


def _encode(name: str, values: torch.Tensor, may_pack: bool,
            coded: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Sparse (bitmask, or zero runs in a coded file) + non-zeros when `may_pack` and a bitmask would
    be smaller than dense; dense otherwise."""
    if may_pack:
        nnz = int((values != 0).sum())
        if bitmask.packed_bytes(values.numel(), nnz, values.element_size()) < values.numel() * values.element_size():
            if coded:
                runs, nonzeros = gaps.pack(values)
                return {"encoding": "gaps"}, {f"{name}#gaps": runs, f"{name}#values": nonzeros}
            bits, nonzeros = bitmask.pack(values)
            return {"encoding": "bitmask"}, {f"{name}#bitmask": bits, f"{name}#values": nonzeros}
    return {"encoding": "dense"}, {f"{name}#values": values.reshape(-1)}


def save_compressed(
    model_or_dir: nn.Module | str | Path,
    out_dir: str | Path,
    dtype: Literal["fp32", "fp16", "int8"] = "fp32",
    *,
    dense_dtype: Literal["fp32", "fp16"] | None = None,
    int8_embeddings: bool = False,
    per_channel: bool = False,
    tokenizer: Any = None,
    codec: str = coding.DEFAULT_CODEC,
) -> Path:
    """Write out_dir/compressed.safetensors + config.json (+ tokenizer). Returns the file's path."""
    coding.check_codec(codec)
    if dtype not in ("fp32", "fp16", "int8"):
        raise UserError(f"unknown compressed dtype '{dtype}'", "use fp32, fp16 or int8")
    dense_dtype = dense_dtype or ("fp16" if dtype == "fp16" else "fp32")
    if dense_dtype not in FLOAT_STORAGE:
        raise UserError(f"unknown dense dtype '{dense_dtype}'", "use fp32 or fp16")
    model, source_dir = load_model(model_or_dir)
    qat_int8 = quantized_weights(model) if dtype == "int8" else {}
    plain = plain_model_copy(model, keep_quantized_values=True)
    roles = _roles(plain)
    ptq_names = set()
    if dtype == "int8":
        defaults = QuantConfig()
        ptq_names = {f"{n}.weight" for n in select_prunable(plain, defaults.include, defaults.exclude)}

    stored: dict[str, torch.Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    first_name_of_storage: dict[tuple, str] = {}
    for name, tensor in plain.state_dict().items():
        storage_key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if tensor.numel() and storage_key in first_name_of_storage:  # tied weights are stored once
            entries[name] = {"encoding": "alias", "of": first_name_of_storage[storage_key]}
            continue
        first_name_of_storage[storage_key] = name
        role, module = roles.get(name, ("other", None))
        entry: dict[str, Any] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
                                 "role": role}
        int8 = _int8_of(name, tensor, module, role, qat_int8, ptq_names, per_channel, int8_embeddings)
        if int8 is not None:
            values, scale, axis = int8
            entry["scale_axis"] = axis if scale.dim() else None  # None: one scale for the tensor
            stored[f"{name}#scale"] = scale.float()
        elif tensor.is_floating_point():
            # Linear weights follow `dtype`; everything else (and Linear weights left float by int8) `dense_dtype`
            float_storage = dtype if role == "linear" and dtype != "int8" else dense_dtype
            values = tensor.to(FLOAT_STORAGE[float_storage])
        else:
            values = tensor
        encoding, parts = _encode(name, values, may_pack=role == "linear", coded=codec != "none")
        entry.update(encoding, storage=str(values.dtype).removeprefix("torch."))
        entries[name] = entry
        stored.update(parts)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain.config.architectures = [type(plain).__name__]
    plain.config.save_pretrained(out)
    manifest = {"architecture": type(plain).__name__, "dtype": dtype, "dense_dtype": dense_dtype, "codec": codec,
                "tensors": entries}
    write_container(out / COMPRESSED_FILE, stored, manifest, codec)
    write_tokenizer(out, tokenizer, source_dir)
    copy_sentence_transformers_files(source_dir, out)  # the pooling, for the runtime's encode and later exports
    return out / COMPRESSED_FILE


def decompress_to_hf(path: str | Path, out_dir: str | Path, tokenizer: Any = None) -> Path:
    """Rebuild the model and write it as a plain transformers directory (+ the tokenizer files)."""
    file = _file_of(path)
    out = Path(out_dir)
    load_compressed(file).save_pretrained(out)
    write_tokenizer(out, tokenizer, file.parent)
    copy_sentence_transformers_files(file.parent, out)
    return out


def compressed_sizes(path: str | Path) -> dict[str, Any]:
    """Bytes on disk (coded, where coded) per role ("linear", "embedding", "other") against the same
    tensors dense in fp32."""
    file = _file_of(path)
    _, manifest, stored_bytes = read_container(file)
    report: dict[str, Any] = {"file_bytes": file.stat().st_size, "roles": {}}
    for name, entry in manifest["tensors"].items():
        if entry["encoding"] == "alias":
            continue
        role = report["roles"].setdefault(entry["role"], {"stored_bytes": 0, "fp32_bytes": 0, "tensors": 0})
        role["stored_bytes"] += sum(size for key, size in stored_bytes.items() if key.rsplit("#", 1)[0] == name)
        role["fp32_bytes"] += 4 * math.prod(entry["shape"])
        role["tensors"] += 1
    return report
