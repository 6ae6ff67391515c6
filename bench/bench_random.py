"""`pruneofa bench` on a random-weight BERT pruned one-shot: no trained model needed.

    .venv/bin/python bench/bench_random.py --random-shape small --sparsity 0.9 --batch-sizes 1,8
    .venv/bin/python bench/bench_random.py --random-shape base --sparsity 0.9 --batch-sizes 1,8 --json
    .venv/bin/python bench/bench_random.py --offline-minilm --sparsity 0.9      # the real MiniLM weights, pruned

small = the offline default's shape (MiniLM: 6 layers x 384, FFN 1536), base = BertConfig defaults
(12 x 768, FFN 3072). The model is a BertForSequenceClassification with 2 labels (what finetune and
transfer write), seeded, pruned per layer with pruneofa.Pruner (one-shot magnitude, default
selection: encoder Linears + pooler), saved once under runs/bench-models/ and reused. Every other
argument goes to `pruneofa bench` unchanged; --wait-idle waits for a quieter machine first.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

SHAPES = {
    "small": dict(num_hidden_layers=6, hidden_size=384, intermediate_size=1536, num_attention_heads=12),
    "base": dict(),
}


def random_pruned_dir(shape: str, sparsity: float, root: Path = Path("runs/bench-models")) -> Path:
    """The saved model directory, made on first use."""
    out = root / f"{shape}-{sparsity:g}"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from pruneofa import Pruner

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2, **SHAPES[shape])).eval()
    if sparsity > 0:
        Pruner(model, method="oneshot", target_sparsity=sparsity, start_step=0).finalize()
    model.save_pretrained(out)
    return out


def minilm_pruned_dir(sparsity: float, root: Path = Path("runs/bench-models")) -> Path:
    """The offline all-MiniLM-L6-v2 (`offline/minilm-l6`, a 6 x 384 BertModel) pruned one-shot per layer
    (magnitude) to `sparsity`, saved once and reused: trained weights of the small shape."""
    out = root / f"minilm-{sparsity:g}"
    if (out / "config.json").is_file():
        return out
    from transformers import BertModel

    from pruneofa import Pruner
    from pruneofa.data.assets import asset_path

    model = BertModel.from_pretrained(asset_path("offline/minilm-l6")).eval()
    if sparsity > 0:
        Pruner(model, method="oneshot", target_sparsity=sparsity, start_step=0).finalize()
    model.save_pretrained(out)
    return out


def wait_for_idle(max_seconds: float, threshold: float) -> float:
    deadline = time.time() + max_seconds
    while os.getloadavg()[0] >= threshold and time.time() < deadline:
        time.sleep(10)
    return os.getloadavg()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--random-shape", choices=sorted(SHAPES))
    source.add_argument("--offline-minilm", action="store_true", help="prune the offline MiniLM instead (6 x 384)")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the 1-minute load average to fall below --idle-load")
    parser.add_argument("--idle-load", type=float, default=1.5)
    args, bench_args = parser.parse_known_args()
    model_dir = (minilm_pruned_dir(args.sparsity) if args.offline_minilm
                 else random_pruned_dir(args.random_shape, args.sparsity))
    if args.wait_idle:
        print(f"load average {wait_for_idle(args.wait_idle, args.idle_load):.2f}", flush=True)
    from pruneofa.cli import main as cli_main

    return cli_main(["bench", str(model_dir), *bench_args])


if __name__ == "__main__":
    raise SystemExit(main())
