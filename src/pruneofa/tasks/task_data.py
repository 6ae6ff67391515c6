"""`TaskData`: a loaded sequence-classification/regression task, as every loader returns it."""

from __future__ import annotations

from dataclasses import dataclass

from datasets import DatasetDict


@dataclass
class TaskData:
    """Splits plus what a model head and the metrics need to know.

    `splits` holds `train` and `validation` (and `test` when there is one). Every split has the
    text columns and a `label` column: class ids 0..num_labels-1 (a `ClassLabel` feature named by
    `label_names`), or float targets for regression. A `test` split may lack `label` (predict-only).
    MNLI also holds `validation_matched` and `validation_mismatched`; `validation` is the matched one.
    """

    name: str
    splits: DatasetDict
    text_columns: list[str]
    label_names: list[str] | None  # None for regression
    is_regression: bool = False

    @property
    def num_labels(self) -> int:
        """Outputs of the classification head: 1 for regression, else the number of classes."""
        return 1 if self.is_regression else len(self.label_names or [])

    @property
    def eval_split_names(self) -> list[str]:
        """The splits to evaluate on: both MNLI validation splits, else `validation`."""
        if "validation_matched" in self.splits:
            return [name for name in ("validation_matched", "validation_mismatched") if name in self.splits]
        return ["validation"]


def limit_splits(splits: DatasetDict, max_train: int | None, max_eval: int | None) -> DatasetDict:
    """Keep the first `max_train` rows of `train` and the first `max_eval` rows of every other split
    (the first rows, not a sample, so that runs with the same caps see the same data)."""
    limited = {}
    for name, dataset in splits.items():
        cap = max_train if name == "train" else max_eval
        limited[name] = dataset.select(range(min(cap, len(dataset)))) if cap is not None else dataset
    return DatasetDict(limited)
