"""File sizes of a 90%-sparse model in every format we write, against the dense fp32 checkpoint.

    python bench/file_sizes.py [--shape base|small] [--sparsity 0.9] [--json out.json]

The model is a BERT of the given shape (base: BertConfig defaults; small: 6 x 384, the offline
default's shape) with random weights, sequence classification with 2 labels, pruned per layer to
`--sparsity` with the default selection (encoder Linears + pooler). Sizes are bytes on disk.

Times, in seconds, best of 3 (the machine is shared): `save` writes the file (coding included);
`read` reads, checks and decodes it into tensors (read_container; safetensors' load_file for the
hf rows); `load` gives a ready model (load_compressed; from_pretrained for the hf rows), which
includes building the transformers model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

from pruneofa import Pruner
from pruneofa.export import compressed_sizes, load_compressed, save_compressed
from pruneofa.fileio import atomic_write_text
from pruneofa.modeldir.container import read_container

SHAPES = {"base": {}, "small": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)}
INT8_ALL = dict(dtype="int8", dense_dtype="fp16", int8_embeddings=True)
VARIANTS = {  # name -> save_compressed keyword arguments
    "compressed fp32": dict(dtype="fp32", codec="none"),
    "compressed fp16": dict(dtype="fp16", codec="none"),
    "compressed int8 (dense parts fp32)": dict(dtype="int8", codec="none"),
    "compressed int8 (dense parts fp16)": dict(dtype="int8", dense_dtype="fp16", codec="none"),
    "compressed int8 + int8 embeddings (dense parts fp16)": dict(INT8_ALL, codec="none"),
    "compressed fp32, zstd": dict(dtype="fp32", codec="zstd"),
    "compressed fp16, zstd": dict(dtype="fp16", codec="zstd"),
    "compressed int8 (dense parts fp16), zstd": dict(dtype="int8", dense_dtype="fp16", codec="zstd"),
    "compressed int8 + int8 embeddings (dense parts fp16), zstd": dict(INT8_ALL, codec="zstd"),
    "compressed int8 + int8 embeddings (dense parts fp16), lzma": dict(INT8_ALL, codec="lzma"),
}


def seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="base")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--json")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2, **SHAPES[args.shape]))
    rows, linear, times = {}, {}, {}

    def hf_row(name: str, directory: Path) -> None:
        save = seconds(lambda: model.save_pretrained(directory), repeats=1)
        file = directory / "model.safetensors"
        rows[name] = file.stat().st_size
        times[name] = {"save": save, "read": seconds(lambda: load_file(file)),
                       "load": seconds(lambda: type(model).from_pretrained(directory))}

    with tempfile.TemporaryDirectory() as tmp:
        hf_row("dense fp32 (model.safetensors)", Path(tmp) / "dense")
        Pruner(model, method="oneshot", target_sparsity=args.sparsity, start_step=0).finalize()
        hf_row("hf sparse fp32 (zeros stored densely)", Path(tmp) / "sparse-hf")
        for name, kwargs in VARIANTS.items():
            directory = Path(tmp) / name.replace(" ", "_")
            save = seconds(lambda: save_compressed(model, directory, **kwargs), repeats=1)
            file = directory / "compressed.safetensors"
            sizes = compressed_sizes(file)
            rows[name] = sizes["file_bytes"]
            linear[name] = sizes["roles"]["linear"]
            times[name] = {"save": save, "read": seconds(lambda: read_container(file)),
                           "load": seconds(lambda: load_compressed(file))}
    dense_bytes = rows["dense fp32 (model.safetensors)"]
    print(f"BERT-{args.shape} shape, {args.sparsity:.0%} per layer, random weights")
    print("| format | MB | x smaller than dense fp32 | encoder Linear weights: x smaller | save s | read s | load s |\n"
          "|---|---|---|---|---|---|---|")
    for name, size in rows.items():
        lin = linear.get(name)
        lin_ratio = f"{lin['fp32_bytes'] / lin['stored_bytes']:.1f}" if lin else "-"
        t = times[name]
        print(f"| {name} | {size / 1e6:.2f} | {dense_bytes / size:.2f} | {lin_ratio} | {t['save']:.2f} | {t['read']:.2f} "
              f"| {t['load']:.2f} |")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps({"rows": rows, "linear": linear, "seconds": times}, indent=1))


if __name__ == "__main__":
    main()
