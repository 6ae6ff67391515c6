"""Each metric against a hand computation on a small case."""

import math

import numpy as np
import pytest

from pruneofa.tasks.metrics import (
    accuracy,
    average_ranks,
    binary_f1,
    logits_to_predictions,
    macro_f1,
    matthews_corrcoef,
    pearson,
    spearman,
    task_metrics,
)

PREDS = [1, 1, 0, 0, 1, 0]
REFS = [1, 0, 0, 1, 1, 0]
# by hand: TP = 2 (rows 0, 4), FP = 1 (row 1), FN = 1 (row 3), TN = 2 (rows 2, 5)


def test_accuracy():
    assert accuracy(PREDS, REFS) == pytest.approx(4 / 6)


def test_binary_f1():
    precision, recall = 2 / 3, 2 / 3
    assert binary_f1(PREDS, REFS) == pytest.approx(2 * precision * recall / (precision + recall))
    # positive class 0: TP = 2 (rows 2, 5), FP = 1 (row 3), FN = 1 (row 1)
    assert binary_f1(PREDS, REFS, positive=0) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert binary_f1([0, 0], [0, 0]) == 0.0  # no positive anywhere


def test_macro_f1_three_classes():
    preds, refs = [0, 1, 2, 2, 1], [0, 2, 2, 1, 1]
    # class 0: TP 1, FP 0, FN 0 → 1;  class 1: TP 1 (row 4), FP 1 (row 1), FN 1 (row 3) → 0.5;
    # class 2: TP 1 (row 2), FP 1 (row 3), FN 1 (row 1) → 0.5
    assert macro_f1(preds, refs) == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_matthews_binary_formula():
    tp, tn, fp, fn = 2, 2, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(PREDS, REFS) == pytest.approx(expected)
    assert matthews_corrcoef([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
    assert matthews_corrcoef([0, 1, 0], [1, 0, 1]) == pytest.approx(-1.0)
    assert matthews_corrcoef([1, 1, 1], [1, 0, 1]) == 0.0  # constant prediction


def test_matthews_multiclass_equals_one_hot_correlation():
    # Gorodkin's R_K is the correlation of the one-hot matrices: Σ_k cov(X_k, Y_k) / sqrt(Σ_k var X_k · Σ_k var Y_k)
    preds, refs = np.array([0, 1, 2, 2, 1, 0, 2]), np.array([0, 2, 2, 1, 1, 0, 0])
    x, y = np.eye(3)[preds], np.eye(3)[refs]
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    expected = np.sum(x * y) / math.sqrt(np.sum(x * x) * np.sum(y * y))
    assert matthews_corrcoef(preds, refs) == pytest.approx(expected)


def test_pearson():
    # x̄ = 2, ȳ = 8/3; dx = (-1, 0, 1), dy = (-5/3, -2/3, 7/3): Σdxdy = 4, Σdx² = 2, Σdy² = 78/9
    assert pearson([1, 2, 3], [1, 2, 5]) == pytest.approx(4 / math.sqrt(2 * 78 / 9))
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_ranks_average_ties():
    np.testing.assert_array_equal(average_ranks([5, 7, 7]), [1, 2.5, 2.5])
    np.testing.assert_array_equal(average_ranks([3, 1, 3, 3, 0]), [4, 2, 4, 4, 1])


def test_spearman_with_ties():
    # ranks x = (1, 2.5, 2.5, 4), y = (1, 3, 2, 4): Σdxdy = 4.5, Σdx² = 4.5, Σdy² = 5
    assert spearman([10, 20, 20, 40], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # any monotone map
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_shape_mismatch_and_empty_rejected():
    with pytest.raises(ValueError):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_task_metric_sets():
    assert task_metrics("cola", PREDS, REFS) == {"matthews_correlation": matthews_corrcoef(PREDS, REFS)}
    assert task_metrics("mrpc", PREDS, REFS) == {"accuracy": accuracy(PREDS, REFS), "f1": binary_f1(PREDS, REFS)}
    assert set(task_metrics("qqp", PREDS, REFS)) == {"accuracy", "f1"}
    for task in ("sst2", "mnli", "qnli", "rte", "rotten_tomatoes"):
        assert task_metrics(task, PREDS, REFS) == {"accuracy": accuracy(PREDS, REFS)}
    assert task_metrics("csv", PREDS, REFS) == {"accuracy": accuracy(PREDS, REFS), "macro_f1": macro_f1(PREDS, REFS)}
    scores = [0.1, 2.0, 3.5, 1.0]
    gold = [0.0, 2.5, 3.0, 1.5]
    expected = {"pearson": pearson(scores, gold), "spearman": spearman(scores, gold)}
    assert task_metrics("stsb", scores, gold) == expected
    assert task_metrics("csv", scores, gold, is_regression=True) == expected
    assert task_metrics("squad", {"q": "the Cat"}, {"q": ["cat"]}) == {"exact_match": 100.0, "f1": 100.0}
    with pytest.raises(ValueError):
        task_metrics("wnli", PREDS, REFS)
    with pytest.raises(ValueError):
        task_metrics("squad", ["cat"], [["cat"]])


def test_logits_to_predictions():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]])
    np.testing.assert_array_equal(logits_to_predictions(logits, is_regression=False), [1, 0])
    np.testing.assert_allclose(logits_to_predictions(np.array([[0.7], [2.5]]), is_regression=True), [0.7, 2.5])
