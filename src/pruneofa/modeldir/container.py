"""The compressed file: one safetensors file whose header carries a manifest and checksums.

    [8 bytes: header length N, little-endian][N bytes: JSON header][payload]

The header is standard safetensors (dtype, shape, byte range per stored tensor) and its
`__metadata__` holds: format name, format version, the manifest (JSON: how to rebuild each model
tensor from the stored ones) and the sha256 of every stored tensor's bytes.

Version 2 (a codec other than "none", see coding.py) stores a tensor entropy coded when that is
smaller: as a uint8 tensor of the coded bytes, with `__metadata__["coding"][name]` naming the
codec, the tensor's dtype, shape, raw byte count and the sha256 of its raw bytes. Version 1 files
have no coding and are still read.

Reading checks, in this order, that the file is complete, the format and version are known, every
stored checksum matches and every coded tensor decodes to exactly its raw bytes, and raises
UserError with one line otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from pruneofa.errors import UserError
from pruneofa.modeldir import coding as entropy

FORMAT_NAME = "pruneofa-compressed"
UNCODED_VERSION, CODED_VERSION = 1, 2  # codec "none" writes version 1, so that older readers read it
READABLE_VERSIONS = (str(UNCODED_VERSION), str(CODED_VERSION))


class Container(NamedTuple):
    tensors: dict[str, torch.Tensor]  # decoded
    manifest: dict[str, Any]
    stored_bytes: dict[str, int]  # bytes each tensor takes in the file (coded or not)


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()  # what safetensors writes


def _sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(_raw_bytes(tensor)).hexdigest()


def _coded(name: str, tensor: torch.Tensor, codec: str) -> tuple[torch.Tensor, dict[str, Any]] | None:
    """(coded bytes as a uint8 tensor, its coding entry), or None when coding saves less than the entry
    costs in the header (small tensors: biases, LayerNorm)."""
    raw = _raw_bytes(tensor)
    coded = entropy.compress(codec, entropy.to_byte_planes(raw, tensor.element_size()))
    entry = {"codec": codec, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape),
             "raw_bytes": len(raw), "raw_sha256": hashlib.sha256(raw).hexdigest()}
    if len(raw) - len(coded) <= len(json.dumps({name: entry})):
        return None
    return torch.frombuffer(bytearray(coded), dtype=torch.uint8), entry


def write_container(path: Path, tensors: dict[str, torch.Tensor], manifest: dict[str, Any],
                    codec: str = "none") -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    coding = {}
    if entropy.check_codec(codec) != "none":
        for name, tensor in tensors.items():
            coded = _coded(name, tensor, codec)
            if coded is not None:
                tensors[name], coding[name] = coded
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(CODED_VERSION if codec != "none" else UNCODED_VERSION),
        "manifest": json.dumps(manifest, separators=(",", ":")),
        "sha256": json.dumps({k: _sha256(v) for k, v in tensors.items()}, separators=(",", ":")),
    }
    if codec != "none":
        metadata["coding"] = json.dumps(coding, separators=(",", ":"))
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)  # a reader never sees a half-written file


def _bad(path: Path, problem: str) -> UserError:
    return UserError(f"{path.name}: {problem}", "re-create it with pruneofa.export.save_compressed")


def _decoded(path: Path, name: str, stored: torch.Tensor, coding: dict[str, Any]) -> torch.Tensor:
    try:
        dtype = getattr(torch, str(coding["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {coding['dtype']!r}")
        shape, raw_size = [int(d) for d in coding["shape"]], int(coding["raw_bytes"])
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if raw_size != math.prod(shape) * itemsize:
            raise ValueError(f"{raw_size} raw bytes for shape {shape}")
        planes = entropy.decompress(str(coding["codec"]), stored.numpy().tobytes(), raw_size)
        raw = entropy.from_byte_planes(planes, itemsize)
    except (KeyError, TypeError, ValueError) as err:
        raise _bad(path, f"coded tensor '{name}' cannot be decoded ({err})") from None
    if hashlib.sha256(raw).hexdigest() != coding.get("raw_sha256"):
        raise _bad(path, f"tensor '{name}' decodes to other bytes than were written (checksum mismatch)")
    return torch.from_numpy(np.frombuffer(bytearray(raw), dtype=np.uint8)).view(dtype).reshape(shape)


def read_container(path: Path) -> Container:
    """(decoded tensors, manifest, stored bytes), after checking completeness, format version,
    checksums and decoding."""
    data = path.read_bytes()
    if len(data) < 8:
        raise _bad(path, "truncated file (no header)")
    header_len = int.from_bytes(data[:8], "little")
    if 8 + header_len > len(data):
        raise _bad(path, "truncated file (header cut short)")
    try:
        header = json.loads(data[8 : 8 + header_len])
        metadata = header.pop("__metadata__", None) or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise _bad(path, "unreadable header (not a safetensors file, or damaged)") from None
    if metadata.get("format") != FORMAT_NAME:
        raise _bad(path, f"not a {FORMAT_NAME} file")
    version = metadata.get("format_version")
    if version not in READABLE_VERSIONS:
        raise UserError(
            f"{path.name}: unknown format version {version} (this pruneofa reads versions "
            f"{' and '.join(READABLE_VERSIONS)})",
            "upgrade pruneofa or re-create the file with this version",
        )
    try:
        manifest = json.loads(metadata["manifest"])
        checksums = json.loads(metadata["sha256"])
        coding = json.loads(metadata.get("coding", "{}"))
        ranges = {name: entry["data_offsets"] for name, entry in header.items()}
    except (KeyError, TypeError, json.JSONDecodeError):
        raise _bad(path, "damaged header (manifest or checksums unreadable)") from None
    payload = memoryview(data)[8 + header_len :]
    end = max((stop for _, stop in ranges.values()), default=0)
    if end > len(payload):
        raise _bad(path, f"truncated file ({len(payload)} of {end} payload bytes)")
    if end < len(payload):
        raise _bad(path, f"{len(payload) - end} unexpected bytes after the payload")
    if set(checksums) != set(ranges):
        raise _bad(path, "checksum list does not match the stored tensors")
    for name, (start, stop) in ranges.items():
        if hashlib.sha256(payload[start:stop]).hexdigest() != checksums[name]:
            raise _bad(path, f"checksum mismatch in tensor '{name}' (the file was modified or damaged)")
    try:
        tensors = load_safetensors(data)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise _bad(path, f"unreadable payload ({str(err).splitlines()[0]})") from None
    if not isinstance(coding, dict) or not set(coding) <= set(tensors):
        raise _bad(path, "damaged header (coding names tensors that are not stored)")
    for name, entry in coding.items():
        tensors[name] = _decoded(path, name, tensors[name], entry)
    return Container(tensors, manifest, {name: stop - start for name, (start, stop) in ranges.items()})
