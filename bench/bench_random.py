"""`pruneofa bench` on a random-weight encoder pruned one-shot: no trained model needed.

    .venv/bin/python bench/bench_random.py --random-shape small --sparsity 0.9 --batch-sizes 1,8
    .venv/bin/python bench/bench_random.py --random-shape base --sparsity 0.9 --batch-sizes 1,8 --json
    .venv/bin/python bench/bench_random.py --random-shape modernbert-base --sparsity 0.9 --threads 2
    .venv/bin/python bench/bench_random.py --offline-minilm --sparsity 0.9      # the real MiniLM weights, pruned
    .venv/bin/python bench/bench_random.py --random-shape gpt2 --sparsity 0.9 --decode --threads 2  # GPT-2 decoding

small = the offline default's shape (MiniLM: 6 layers x 384, FFN 1536), base = BertConfig defaults
(12 x 768, FFN 3072); modernbert-base = ModernBertConfig defaults (answerdotai/ModernBERT-base: 22 x 768,
gated FFN 2 x 1152, rotary, local attention of 128 tokens in two layers of three); xlmr-base =
xlm-roberta-base (12 x 768, FFN 3072, 250002 tokens); gpt2 = GPT2Config defaults (12 x 768, 50257 tokens)
as a GPT2LMHeadModel (time it with --decode). The encoders are <family>ForSequenceClassification
with 2 labels (what finetune and transfer write). Seeded, pruned per layer with pruneofa.Pruner
(one-shot magnitude, --pattern, default selection: the blocks' Linears + pooler; not GPT-2's LM head), saved once under
runs/bench-models/ and reused. Every other argument goes to `pruneofa bench` unchanged; --wait-idle
waits for a quieter machine first; --priority runs the benchmark in its own scheduler group at a raised
weight (runtime_speed.raise_priority: on a shared machine, 2-thread timings otherwise measure the load).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

SHAPES = {  # name -> (transformers config class, its settings)
    "small": ("BertConfig", dict(num_hidden_layers=6, hidden_size=384, intermediate_size=1536,
                                 num_attention_heads=12)),
    "base": ("BertConfig", dict()),
    "modernbert-base": ("ModernBertConfig", dict()),
    "xlmr-base": ("XLMRobertaConfig", dict(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1,
                                           pad_token_id=1, bos_token_id=0, eos_token_id=2)),
    "gpt2": ("GPT2Config", dict()),
}
CAUSAL_LM_SHAPES = ("gpt2",)  # a <family>LMHeadModel, timed with --decode


def saved_once(out: Path, save: Callable[[Path], None]) -> Path:
    """`out`, made by `save(dir)` on first use: written beside it and renamed into place, so a run that is
    interrupted leaves no directory that a later run would take for a made one."""
    if out.is_dir():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run
    save(partial)
    os.replace(partial, out)
    return out


def random_pruned_dir(shape: str, sparsity: float, root: Path = Path("runs/bench-models"),
                      pattern: str = "unstructured") -> Path:
    """The saved model directory, made on first use (pattern: pruneofa's, e.g. block:1x4)."""
    out = root / (f"{shape}-{sparsity:g}" + ("" if pattern == "unstructured" else f"-{pattern.replace(':', '')}"))
    if out.is_dir():
        return out
    import torch
    import transformers

    from pruneofa import Pruner

    torch.manual_seed(0)
    config_class, settings = SHAPES[shape]
    if shape in CAUSAL_LM_SHAPES:
        model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, config_class)(**settings)).eval()
    else:
        config = getattr(transformers, config_class)(num_labels=2, **settings)
        model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    if sparsity > 0:
        Pruner(model, method="oneshot", target_sparsity=sparsity, start_step=0, pattern=pattern).finalize()
    return saved_once(out, model.save_pretrained)


def minilm_pruned_dir(sparsity: float, root: Path = Path("runs/bench-models")) -> Path:
    """The offline all-MiniLM-L6-v2 (`offline/minilm-l6`, a 6 x 384 BertModel) pruned one-shot per layer
    (magnitude) to `sparsity`, saved once and reused: trained weights of the small shape."""
    out = root / f"minilm-{sparsity:g}"
    if out.is_dir():
        return out
    from transformers import BertModel

    from pruneofa import Pruner
    from pruneofa.data.assets import asset_path

    model = BertModel.from_pretrained(asset_path("offline/minilm-l6")).eval()
    if sparsity > 0:
        Pruner(model, method="oneshot", target_sparsity=sparsity, start_step=0).finalize()
    return saved_once(out, model.save_pretrained)


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
    parser.add_argument("--pattern", default="unstructured", help="with --random-shape: e.g. block:1x4")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the 1-minute load average to fall below --idle-load")
    parser.add_argument("--idle-load", type=float, default=1.5)
    parser.add_argument("--priority", action="store_true", help="own scheduler group, raised weight")
    args, bench_args = parser.parse_known_args()
    model_dir = (minilm_pruned_dir(args.sparsity) if args.offline_minilm
                 else random_pruned_dir(args.random_shape, args.sparsity, pattern=args.pattern))
    if args.wait_idle:
        print(f"load average {wait_for_idle(args.wait_idle, args.idle_load):.2f}", flush=True)
    if args.priority:
        from runtime_speed import raise_priority  # this script's folder is on sys.path

        print(f"scheduler group weight: {raise_priority()}", flush=True)
    from pruneofa.cli import main as cli_main

    return cli_main(["bench", str(model_dir), *bench_args])


if __name__ == "__main__":
    raise SystemExit(main())
