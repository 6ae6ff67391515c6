"""The compressed file: one safetensors file whose header carries a manifest and checksums.

    [8 bytes: header length N, little-endian][N bytes: JSON header][payload]

The header is standard safetensors (dtype, shape, byte range per stored tensor) and its
`__metadata__` holds: format name, format version, the manifest (JSON: how to rebuild each model
tensor from the stored ones) and the sha256 of every stored tensor's bytes. Reading checks, in this
order, that the file is complete, the format and version are known and every checksum matches, and
raises UserError with one line otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from pruneofa.errors import UserError

FORMAT_NAME = "pruneofa-compressed"
FORMAT_VERSION = 1


def _sha256(tensor: torch.Tensor) -> str:
    raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8)  # the bytes safetensors writes
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def write_container(path: Path, tensors: dict[str, torch.Tensor], manifest: dict[str, Any]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "manifest": json.dumps(manifest, separators=(",", ":")),
        "sha256": json.dumps({k: _sha256(v) for k, v in tensors.items()}, separators=(",", ":")),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)  # a reader never sees a half-written file


def _bad(path: Path, problem: str) -> UserError:
    return UserError(f"{path.name}: {problem}", "re-create it with pruneofa.export.save_compressed")


def read_container(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(stored tensors, manifest), after checking completeness, format version and checksums."""
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
    if version != str(FORMAT_VERSION):
        raise UserError(
            f"{path.name}: unknown format version {version} (this pruneofa reads version {FORMAT_VERSION})",
            "upgrade pruneofa or re-create the file with this version",
        )
    try:
        manifest = json.loads(metadata["manifest"])
        checksums = json.loads(metadata["sha256"])
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
    return tensors, manifest
