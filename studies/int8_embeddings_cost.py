"""What storing the embedding tables in int8 costs in accuracy: the file a deployment reads, scored.

    python studies/int8_embeddings_cost.py QAT_DIR [--max-eval-samples N] [--json out.json]

QAT_DIR is the output of `pruneofa quantize` (e.g. runs/demo/rt-int8). The script writes the
compressed int8 export twice (embeddings fp32, as the method leaves them, and embeddings int8 with
per-row scales), loads each file back with `load_compressed` (the int8 values times their scales:
what the file holds), and scores both on the task's validation and test splits with the
evaluation code of `pruneofa eval`, on the task QAT_DIR records (its pruneofa.json). It prints accuracy, the difference in points and the file sizes.
The demo stores int8 embeddings only when this difference is at most 0.5 points (issue #15).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from transformers import set_seed

from pruneofa.export import load_compressed
from pruneofa.models import load_tokenizer
from pruneofa.stages.export_cmd import run_export
from pruneofa.stages.eval import load_eval_recipe
from pruneofa.tasks.adapters import evaluate_splits, load_task_data, scored_splits


def score_export(qat_dir: str, out: Path, int8_embeddings: bool, task, tokenizer) -> dict[str, float]:
    written = run_export(qat_dir, "compressed", str(out), dtype="int8", int8_embeddings=int8_embeddings)
    model = load_compressed(out)
    metrics = evaluate_splits(task, model, scored_splits(task, with_test=True), 64, tokenizer)
    return {**metrics, "file_bytes": Path(written).stat().st_size}  # the compressed .safetensors file


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qat_dir")
    parser.add_argument("--max-eval-samples", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    set_seed(0)
    tokenizer = load_tokenizer(args.qat_dir, False)
    limit = {"data.max_eval_samples": args.max_eval_samples} if args.max_eval_samples else {}
    task = load_task_data(load_eval_recipe(args.qat_dir, None, limit).data, tokenizer, with_train=False)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():  # not set_grad_enabled: a caller's state stays
        rows = {name: score_export(args.qat_dir, Path(tmp) / name, flag, task, tokenizer)
                for name, flag in (("embeddings fp32", False), ("embeddings int8", True))}
    fp32, int8 = rows["embeddings fp32"], rows["embeddings int8"]
    result = {"qat_dir": args.qat_dir, "rows": rows,
              "cost_points": {k: round(100 * (fp32[k] - int8[k]), 2) for k in fp32 if k.endswith("accuracy")}}
    for name, row in rows.items():
        print(f"{name:16s} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k.endswith("accuracy"))
              + f"  file {row['file_bytes'] / 2**20:.2f} MiB")
    print("cost of int8 embeddings (points):", result["cost_points"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
