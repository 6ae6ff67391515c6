"""File sizes of a 90%-sparse model in every format we write, against the dense fp32 checkpoint.

    python bench/file_sizes.py [--shape base|small] [--sparsity 0.9] [--json out.json]

The model is a BERT of the given shape (base: BertConfig defaults; small: 6 x 384, the offline
default's shape) with random weights, sequence classification with 2 labels, pruned per layer to
`--sparsity` with the default selection (encoder Linears + pooler). Sizes are bytes on disk.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import transformers

from pruneofa import Pruner
from pruneofa.export import compressed_sizes, save_compressed

SHAPES = {"base": {}, "small": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)}
VARIANTS = {  # name -> save_compressed keyword arguments
    "compressed fp32": dict(dtype="fp32"),
    "compressed fp16": dict(dtype="fp16"),
    "compressed int8 (dense parts fp32)": dict(dtype="int8"),
    "compressed int8 (dense parts fp16)": dict(dtype="int8", dense_dtype="fp16"),
    "compressed int8 + int8 embeddings (dense parts fp16)": dict(dtype="int8", dense_dtype="fp16", int8_embeddings=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="base")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2, **SHAPES[args.shape]))
    with tempfile.TemporaryDirectory() as tmp:
        dense = Path(tmp) / "dense"
        model.save_pretrained(dense)
        dense_bytes = (dense / "model.safetensors").stat().st_size
        Pruner(model, method="oneshot", target_sparsity=args.sparsity, start_step=0).finalize()
        model.save_pretrained(Path(tmp) / "sparse-hf")
        rows = {"dense fp32 (model.safetensors)": dense_bytes,
                "hf sparse fp32 (zeros stored densely)": (Path(tmp) / "sparse-hf" / "model.safetensors").stat().st_size}
        linear = {}
        for name, kwargs in VARIANTS.items():
            path = save_compressed(model, Path(tmp) / name.replace(" ", "_"), **kwargs)
            sizes = compressed_sizes(path)
            rows[name] = sizes["file_bytes"]
            linear[name] = sizes["roles"]["linear"]
    print(f"BERT-{args.shape} shape, {args.sparsity:.0%} per layer, random weights")
    print("| format | MB | x smaller than dense fp32 | encoder Linear weights: x smaller |\n|---|---|---|---|")
    for name, size in rows.items():
        lin = linear.get(name)
        lin_ratio = f"{lin['fp32_bytes'] / lin['stored_bytes']:.1f}" if lin else "-"
        print(f"| {name} | {size / 1e6:.2f} | {dense_bytes / size:.2f} | {lin_ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "linear": linear}, indent=1))


if __name__ == "__main__":
    main()
