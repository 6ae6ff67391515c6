"""The report's retrieval table: title -> summary recall@1/@10 of the dense LM teacher's encoder and of
the sparse pre-trained model's, each with its ratio to dense, from the eval steps that ran the
retrieval recipe. No task teacher or head is involved: it shows what sparse pre-training kept.

ratio = recall(sparse) / recall(dense); a figure no step produced is "not measured", never estimated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pruneofa.pipeline.schema import PipelineRecipe

NOT_MEASURED = "not measured"
ROLES = [("retrieval_dense", "dense (LM teacher)"), ("retrieval_sparse", "sparse (pre-trained)")]
RECALLS = ("recall@1", "recall@10")
METRICS_FILE = "eval_metrics.json"  # what the pipeline's eval command writes into its step dir


def retrieval_metrics(step_dir: Path | None) -> dict[str, Any]:
    """The step's eval metrics if they are retrieval ones, else {}."""
    try:
        metrics = json.loads((step_dir / METRICS_FILE).read_text()) if step_dir else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return metrics if isinstance(metrics, dict) and metrics.get("kind") == "retrieval" else {}


def retrieval_step(pipeline: PipelineRecipe, role: str, dirs: dict[str, Path]) -> str | None:
    """The step named for `role` in report:, else the retrieval eval step whose model is the pruning
    step's output (sparse) or the model that pruning started from (dense)."""
    named = getattr(pipeline.report, role)
    prune = pipeline.step_for("pruning")
    if named or prune is None:
        return named
    target = f"${{{prune}}}" if role == "retrieval_sparse" else pipeline.steps[prune].overrides.get("model")
    found = [name for name, spec in pipeline.steps.items() if spec.stage == "eval"
             and spec.overrides.get("model") == target and retrieval_metrics(dirs.get(name))]
    return found[-1] if found else None


def retrieval_rows(pipeline: PipelineRecipe, dirs: dict[str, Path]) -> list[dict[str, Any]]:
    """One row per role, or [] when no retrieval eval ran (the report then shows no table)."""
    rows = []
    for role, label in ROLES:
        step = retrieval_step(pipeline, role, dirs)
        metrics = retrieval_metrics(dirs.get(step) if step else None)
        rows.append({"model": role, "label": label, "step": step,
                     **{key: metrics.get(key) for key in (*RECALLS, "n_queries", "sparsity")}})
    dense = rows[0]
    for row in rows:
        row["ratio"] = {k: row[k] / dense[k] if row[k] is not None and dense[k] else None for k in RECALLS}
    return rows if any(row[k] is not None for row in rows for k in RECALLS) else []


def _percent(value: float | None, digits: int = 2) -> str:
    return NOT_MEASURED if value is None else f"{100 * value:.{digits}f}"


def retrieval_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["| encoder | step | sparsity (%) | queries | recall@1 (%) | vs dense | recall@10 (%) | vs dense |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratios = [NOT_MEASURED if r["ratio"][k] is None else f"{r['ratio'][k]:.3f}x" for k in RECALLS]
        lines.append(f"| {r['label']} | {r['step'] or NOT_MEASURED} | {_percent(r['sparsity'], 1)} | "
                     f"{r['n_queries'] if r['n_queries'] is not None else NOT_MEASURED} | {_percent(r['recall@1'])} | "
                     f"{ratios[0]} | {_percent(r['recall@10'])} | {ratios[1]} |")
    return lines


def retrieval_section(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown section: what was measured, the table, and one sentence reading it."""
    if not rows:
        return []
    dense, sparse = rows
    text = ["## Retrieval without a task teacher", "",
            "Each held-out Wikipedia summary is searched for by its title among all held-out summaries "
            "(`pruneofa eval MODEL retrieval`): mean-pooled embeddings of the encoder, cosine similarity, no task "
            "head or task teacher. It shows what the sparse model kept from pre-training before any transfer.", "",
            *retrieval_table(rows), ""]
    if None not in sparse["ratio"].values():
        text += [f"The sparse pre-trained model keeps {100 * sparse['ratio']['recall@1']:.1f}% of the dense teacher's "
                 f"recall@1 and {100 * sparse['ratio']['recall@10']:.1f}% of its recall@10.", ""]
    return text
