"""Classification/regression metrics in plain numpy, and the GLUE metric set of each task.

Scale: GLUE-style metrics are fractions in [0, 1] (or [-1, 1] for correlations), as in the
reference `evaluate` implementation; SQuAD EM/F1 are percentages, as in the official script.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pruneofa.tasks.squad_metrics import squad_metrics


def _as_arrays(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    preds, refs = np.asarray(predictions), np.asarray(references)
    if preds.shape != refs.shape or preds.ndim != 1:
        raise ValueError(f"predictions {preds.shape} and references {refs.shape} must be equal-length 1-D arrays")
    if len(preds) == 0:
        raise ValueError("cannot score an empty set of predictions")
    return preds, refs


def accuracy(predictions, references) -> float:
    """Fraction of predictions equal to the reference."""
    preds, refs = _as_arrays(predictions, references)
    return float(np.mean(preds == refs))


def _f1_for_class(preds: np.ndarray, refs: np.ndarray, positive) -> float:
    """F1 = 2·TP / (2·TP + FP + FN); 0 when the class never occurs in either (no TP, FP, FN)."""
    tp = np.sum((preds == positive) & (refs == positive))
    fp = np.sum((preds == positive) & (refs != positive))
    fn = np.sum((preds != positive) & (refs == positive))
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0


def binary_f1(predictions, references, positive=1) -> float:
    """F1 of the positive class (GLUE MRPC/QQP use label 1: paraphrase/duplicate)."""
    preds, refs = _as_arrays(predictions, references)
    return _f1_for_class(preds, refs, positive)


def macro_f1(predictions, references) -> float:
    """Unweighted mean of per-class F1 over every class seen in the references or predictions."""
    preds, refs = _as_arrays(predictions, references)
    classes = np.union1d(preds, refs)
    return float(np.mean([_f1_for_class(preds, refs, c) for c in classes]))


def matthews_corrcoef(predictions, references) -> float:
    """Matthews correlation, multi-class form (Gorodkin 2004) from the confusion matrix C:

        MCC = (c·s − Σ_k p_k t_k) / sqrt((s² − Σ_k p_k²)(s² − Σ_k t_k²))

    with c = Σ_k C_kk (correct), s = total, p_k = times k was predicted, t_k = times k truly occurs.
    For two classes this is (TP·TN − FP·FN)/sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)). Defined as 0 when a
    denominator factor is 0 (a constant prediction or reference), as scikit-learn does.
    """
    preds, refs = _as_arrays(predictions, references)
    classes = np.union1d(preds, refs)
    p = np.array([np.sum(preds == k) for k in classes], dtype=np.float64)
    t = np.array([np.sum(refs == k) for k in classes], dtype=np.float64)
    c = float(np.sum(preds == refs))
    s = float(len(preds))
    denominator = (s * s - np.sum(p * p)) * (s * s - np.sum(t * t))
    if denominator == 0:
        return 0.0
    return float((c * s - np.sum(p * t)) / np.sqrt(denominator))


def pearson(predictions, references) -> float:
    """Pearson r = Σ(x−x̄)(y−ȳ) / sqrt(Σ(x−x̄)² Σ(y−ȳ)²); NaN when either side is constant."""
    x, y = _as_arrays(predictions, references)
    x, y = x.astype(np.float64), y.astype(np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    if denominator == 0:
        return float("nan")
    return float(np.sum(dx * dy) / denominator)


def average_ranks(values) -> np.ndarray:
    """1-based ranks; tied values all get the mean of the ranks they span (e.g. [5, 7, 7] → [1, 2.5, 2.5])."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1  # mean of 1-based ranks start+1 … end+1
        start = end + 1
    return ranks


def spearman(predictions, references) -> float:
    """Spearman ρ = Pearson r of the average ranks (ties share their mean rank)."""
    x, y = _as_arrays(predictions, references)
    return pearson(average_ranks(x), average_ranks(y))


def logits_to_predictions(logits, is_regression: bool) -> np.ndarray:
    """Model outputs (n, num_labels) → predictions: argmax ids, or the single regression output."""
    logits = np.asarray(logits)
    if is_regression:
        return logits.reshape(len(logits), -1)[:, 0]
    return np.argmax(logits, axis=-1)


def task_metrics(
    task_name: str,
    predictions,
    references,
    *,
    is_regression: bool = False,
) -> dict[str, float]:
    """The metric set of a task (keys are metric names):

    cola: matthews_correlation · stsb: pearson, spearman · mrpc/qqp: accuracy, f1 (binary) ·
    sst2/mnli/qnli/rte/rotten_tomatoes: accuracy · csv: accuracy, macro_f1 (pearson, spearman
    if `is_regression`) · squad/squad_v2/qa: exact_match, f1 (percent; see `squad_metrics`),
    where predictions is {id: text} and references is {id: [gold texts]}.

    mnli: call once per validation split and prefix the keys (matched/mismatched) upstream.
    """
    if task_name in ("squad", "squad_v2", "qa"):
        if not isinstance(predictions, Mapping) or not isinstance(references, Mapping):
            raise ValueError("QA metrics take predictions {id: text} and references {id: [gold texts]}")
        return squad_metrics(predictions, references)
    if isinstance(predictions, Mapping) or isinstance(references, Mapping):
        raise ValueError(f"{task_name} metrics take sequences of predictions and references, not dicts")
    if task_name == "stsb" or (task_name == "csv" and is_regression):
        return {"pearson": pearson(predictions, references), "spearman": spearman(predictions, references)}
    if task_name == "cola":
        return {"matthews_correlation": matthews_corrcoef(predictions, references)}
    if task_name in ("mrpc", "qqp"):
        return {"accuracy": accuracy(predictions, references), "f1": binary_f1(predictions, references)}
    if task_name in ("sst2", "mnli", "qnli", "rte", "rotten_tomatoes"):
        return {"accuracy": accuracy(predictions, references)}
    if task_name == "csv":
        return {"accuracy": accuracy(predictions, references), "macro_f1": macro_f1(predictions, references)}
    raise ValueError(f"unknown task {task_name!r}")

