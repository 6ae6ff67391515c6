"""Read pruneofa's compressed.safetensors without pruneofa or torch (docs/FORMAT.md).

Needs safetensors and numpy, plus zstandard for zstd-coded files (the default codec).
`read_compressed(path)` returns {state-dict name: numpy array}; checksums are not verified here.
"""

import json
import lzma
import sys

import numpy as np
from safetensors import safe_open


def decode(coded: np.ndarray, coding: dict) -> np.ndarray:
    """An entropy-coded stored tensor: decompress, then undo the byte planes."""
    if coding["codec"] == "zstd":
        import zstandard

        raw = zstandard.ZstdDecompressor().decompress(coded.tobytes())
    else:  # "lzma": an .xz stream
        raw = lzma.decompress(coded.tobytes())
    dtype = np.dtype(coding["dtype"])
    planes = np.frombuffer(raw, np.uint8).reshape(dtype.itemsize, -1)  # byte 0 of every element, then byte 1...
    return np.ascontiguousarray(planes.T).view(dtype).reshape(coding["shape"])


def read_compressed(path: str) -> dict[str, np.ndarray]:
    with safe_open(path, "np") as f:
        meta = f.metadata()
        stored = {key: f.get_tensor(key) for key in f.keys()}
    assert meta["format"] == "pruneofa-compressed" and meta["format_version"] in ("1", "2")
    for key, coding in json.loads(meta.get("coding", "{}")).items():
        stored[key] = decode(stored[key], coding)
    entries = json.loads(meta["manifest"])["tensors"]
    out = {}
    for name, e in entries.items():
        if e["encoding"] == "alias":
            continue
        shape, values = e["shape"], stored[name + "#values"]
        if e["encoding"] == "dense":
            tensor = values.reshape(shape)
        else:
            n = int(np.prod(shape))
            if e["encoding"] == "bitmask":  # 1 bit per element, row-major, most significant bit first
                where = np.flatnonzero(np.unpackbits(stored[name + "#bitmask"], count=n))
            else:  # "gaps": zeros before each non-zero; a byte 255 means 255 zeros and no non-zero yet
                codes = stored[name + "#gaps"].astype(np.int64)
                where = (np.cumsum(codes + (codes != 255)) - 1)[codes != 255]
            flat = np.zeros(n, values.dtype)
            flat[where] = values
            tensor = flat.reshape(shape)
        if e["storage"] == "int8":  # w = q * s, s per tensor (scale_axis null) or per slice along scale_axis
            scale, axis = stored[name + "#scale"], e.get("scale_axis")
            if axis is not None:
                scale = np.expand_dims(scale, [d for d in range(len(shape)) if d != axis])
            tensor = tensor.astype(np.float32) * scale
        out[name] = tensor.astype(e["dtype"])
    for name, e in entries.items():
        if e["encoding"] == "alias":  # tied weights are stored once
            out[name] = out[e["of"]]
    return out


if __name__ == "__main__":
    for name, array in read_compressed(sys.argv[1]).items():
        print(f"{name} {array.dtype} {list(array.shape)} sparsity {float((array == 0).mean()):.1%}")
