"""Wiki pairs without fine-tuning: what an encoder already knows of the task, and the state of its [CLS].

    python studies/pairs_zero_shot.py MODEL_DIR [MODEL_DIR ...] [--pairs-dir runs/s9/wiki-pairs] [--json out.json]

For each model: embed sentence1 and sentence2 of every validation and test pair apart (mean pooling as
sentence-transformers computes it, and the last layer's [CLS] state), score a pair by the cosine of its two
embeddings, fit the accuracy-maximising threshold on validation and report test accuracy at it. A
sentence-embedding model answers "same article?" this way with no task head at all, so the figure says how
much of the task a pruned encoder keeps before any transfer.

Beside it, how input-dependent the [CLS] state is on the pairs as a fine-tuned model reads them (the two
sentences in one input): the mean cosine between different inputs' last-layer [CLS] vectors (1.0: the same
vector for every input). A classification head reads only that vector (through the pooler).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def read_pairs(path: Path) -> tuple[list[str], list[str], torch.Tensor]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], torch.tensor([int(r["label"]) for r in rows])


def threshold_accuracy(val_scores: torch.Tensor, val_labels: torch.Tensor, test_scores: torch.Tensor,
                       test_labels: torch.Tensor) -> tuple[float, float]:
    """(validation accuracy, test accuracy) of `score > t`, t the best threshold on validation."""
    candidates = torch.sort(val_scores).values
    correct = (val_scores[None, :] > candidates[:, None]).long() == val_labels[None, :]
    accuracies = correct.float().mean(1)
    best = int(accuracies.argmax())
    test = ((test_scores > candidates[best]).long() == test_labels).float().mean()
    return float(accuracies[best]), float(test)


@torch.no_grad()
def cls_sameness(model, tokenizer, first: list[str], second: list[str], max_seq_len: int) -> float:
    """Mean cosine between the last-layer [CLS] states of different pair inputs."""
    batch = tokenizer(first, second, padding=True, truncation=True, max_length=max_seq_len, return_tensors="pt")
    accepted = inspect.signature(model.forward).parameters  # DistilBERT takes no token_type_ids
    cls = model(**{k: v for k, v in batch.items() if k in accepted}).last_hidden_state[:, 0]
    unit = F.normalize(cls.float(), dim=-1)
    n = len(unit)
    return float(((unit @ unit.T).sum() - n) / (n * n - n))


def study(model_dir: str, pairs_dir: Path, max_seq_len: int, cls_pairs: int) -> dict:
    from transformers import AutoTokenizer

    from pruneofa.data.assets import resolve_model_path
    from pruneofa.tasks.retrieval import embed, load_encoder

    model = load_encoder(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model_dir))
    splits = {name: read_pairs(pairs_dir / f"{name}.csv") for name in ("validation", "test")}
    result: dict = {"model": model_dir}
    for mode in ("mean", "cls"):
        scores = {}
        for name, (first, second, _) in splits.items():
            a = embed(model, tokenizer, first, max_seq_len, 64, mode)
            b = embed(model, tokenizer, second, max_seq_len, 64, mode)
            scores[name] = (a * b).sum(-1)
        val, test = threshold_accuracy(scores["validation"], splits["validation"][2], scores["test"],
                                       splits["test"][2])
        result[f"{mode}_validation"], result[f"{mode}_test"] = val, test
    first, second, _ = splits["validation"]
    result["cls_sameness"] = cls_sameness(model, tokenizer, first[:cls_pairs], second[:cls_pairs], max_seq_len)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--pairs-dir", type=Path, default=Path("runs/s9/wiki-pairs"),
                        help="written by python -m pruneofa.tasks.wiki_pairs")
    parser.add_argument("--max-seq-len", type=int, default=96, help="the transfer study's data.max_seq_len")
    parser.add_argument("--cls-pairs", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    print("| model | zero-shot test, mean pooling (%) | [CLS] (%) | [CLS] sameness |\n|---|---:|---:|---:|")
    for model_dir in args.models:
        r = study(model_dir, args.pairs_dir, args.max_seq_len, args.cls_pairs)
        results.append(r)
        print(f"| {model_dir} | {100 * r['mean_test']:.1f} | {100 * r['cls_test']:.1f} | {r['cls_sameness']:.3f} |",
              flush=True)
    if args.json:
        from pruneofa.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
