"""Task adapters: what training and evaluation need of each kind of task, in one object.

`ClassificationTask` (single/pair sequence classification, any number of labels, regression) and
`QATask` (extractive QA) each hold the tokenized splits, the head's class and its arguments, the
check of a trained head, the KD term for the head, and the scoring of a split. `load_task_data`
picks the adapter for `data.task`; `forward_all` and `batch_maker` run a model over a split.
"""

from __future__ import annotations

import inspect as pyinspect
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.utils import parametrize
from tqdm.auto import tqdm
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, DataCollatorWithPadding

from pruneofa.distill import DistillConfig, distillation_loss
from pruneofa.errors import UserError
from pruneofa.head_kd import combine_kd, regression_kd, span_kd
from pruneofa.tasks import (
    EVAL_ONLY_COLUMNS,
    TaskDataConfig,
    is_qa_task,
    load_qa,
    load_task,
    logits_to_predictions,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    qa_references,
    task_metrics,
    tokenize_task,
)

TARGETS = ("labels", "start_positions", "end_positions")  # what the teacher must not see
TEACHER_LOGITS = "teacher_logits"  # a training-set column of the frozen teacher's logits, when precomputed


class ClassificationTask:
    """Sequence classification or regression; each split tokenized unpadded (padded per batch)."""

    auto_class = AutoModelForSequenceClassification

    def __init__(self, cfg: TaskDataConfig, tokenizer, with_train: bool):
        self.cfg, self.data = cfg, load_task(cfg)
        if not with_train:  # eval needs no tokenized training set (MNLI's is 393k pairs)
            self.data.splits.pop("train")
        encoded = tokenize_task(self.data, tokenizer, cfg.max_seq_len)
        self.train = encoded.get("train")
        self.eval_sets = {name: encoded[name] for name in self.data.eval_split_names}
        self.test = encoded["test"] if "test" in encoded and "labels" in encoded["test"].column_names else None

    def head_kwargs(self) -> dict[str, Any]:
        if self.data.is_regression:
            return {"num_labels": 1, "problem_type": "regression"}
        names = self.data.label_names
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}, "problem_type": "single_label_classification"}

    def check_head(self, model, role: str, path: str) -> None:
        """A trained head must predict exactly this task's labels, in this order."""
        names = self.data.label_names  # None: regression
        have = [model.config.id2label[i] for i in range(model.config.num_labels)]
        unnamed = all(name == f"LABEL_{i}" for i, name in enumerate(have))  # a head saved without label names
        if len(have) != self.data.num_labels or (names and not unnamed and have != names):
            raise UserError(f"{role} '{path}' predicts labels {have}, the task has "
                            f"{names if names else 'one regression target'}",
                            f"use a {role} fine-tuned on this task (same labels in the same order)")

    def kd_loss(self, out_s, out_t, cfg: DistillConfig, mask) -> dict[str, torch.Tensor]:
        if not self.data.is_regression:
            return distillation_loss(out_s, out_t, cfg, mask)  # KD: one distribution per example
        return combine_kd(out_s, out_t, cfg, mask, regression_kd)

    def score(self, model, split: str, batch_size: int, tokenizer) -> dict[str, float]:
        dataset = self.test if split == "test" else self.eval_sets[split]
        logits = forward_all(model, dataset, batch_size, tokenizer, ("logits",))["logits"]
        preds = logits_to_predictions(logits, self.data.is_regression)
        return task_metrics(self.data.name, preds, np.asarray(dataset["labels"]), is_regression=self.data.is_regression)


class QATask:
    """Extractive QA: contexts cut into windows of max_seq_len sharing doc_stride tokens."""

    auto_class = AutoModelForQuestionAnswering

    def __init__(self, cfg: TaskDataConfig, tokenizer, with_train: bool):
        self.cfg, splits = cfg, load_qa(cfg)
        args = {"tokenizer": tokenizer, "max_seq_len": cfg.max_seq_len, "doc_stride": cfg.doc_stride}

        def windows(split: str, prepare: Callable):
            ds = splits[split]
            return ds.map(prepare, batched=True, remove_columns=ds.column_names, fn_kwargs=args, desc=f"windows {split}")

        self.train = windows("train", prepare_train_features) if with_train and "train" in splits else None
        self.examples = {s: splits[s] for s in ("validation", "test") if s in splits}
        # a test file may hold bare questions: scored only if some have gold answers
        if "test" in self.examples and not any(a["text"] for a in self.examples["test"]["answers"]):
            del self.examples["test"]
        self.features = {s: windows(s, prepare_eval_features) for s in self.examples}
        self.eval_sets = {"validation": self.features["validation"]}
        self.test = self.features.get("test")

    def head_kwargs(self) -> dict[str, Any]:
        return {}

    def check_head(self, model, role: str, path: str) -> None:
        pass  # a span head has no labels to disagree on

    def kd_loss(self, out_s, out_t, cfg: DistillConfig, mask) -> dict[str, torch.Tensor]:
        return combine_kd(out_s, out_t, cfg, mask, span_kd)

    def score(self, model, split: str, batch_size: int, tokenizer) -> dict[str, float]:
        features, examples = self.features[split], self.examples[split]
        out = forward_all(model, features.remove_columns(list(EVAL_ONLY_COLUMNS)), batch_size, tokenizer,
                          ("start_logits", "end_logits"))
        answers = postprocess_qa_predictions(examples, features, out["start_logits"], out["end_logits"],
                                             self.cfg.n_best, self.cfg.max_answer_len, self.cfg.with_negative)
        return task_metrics(self.cfg.task, answers, qa_references(examples))


def load_task_data(cfg: TaskDataConfig, tokenizer, with_train: bool = True) -> ClassificationTask | QATask:
    return (QATask if is_qa_task(cfg.task) else ClassificationTask)(cfg, tokenizer, with_train)


def batch_maker(dataset, tokenizer, model) -> Callable[[list[int]], dict[str, torch.Tensor]]:
    """indices -> padded tensors of the columns the model's forward takes (DistilBERT: no token_type_ids), and
    the teacher's precomputed logits when the dataset holds them."""
    accepted = set(pyinspect.signature(model.forward).parameters) | {TEACHER_LOGITS}
    columns = [c for c in dataset.column_names if c in accepted]
    view, collator = dataset.select_columns(columns), DataCollatorWithPadding(tokenizer)

    def make_batch(indices: list[int]) -> dict[str, torch.Tensor]:
        rows = view[indices]
        return dict(collator([dict(zip(rows, values)) for values in zip(*rows.values())]))

    return make_batch


@torch.no_grad()
def forward_all(model, dataset, batch_size: int, tokenizer, outputs: tuple[str, ...],
                progress: str | None = None) -> dict[str, np.ndarray]:
    """Run `model` over every row of `dataset`; the named outputs, concatenated in the rows' order.

    The rows are batched shortest first, so a batch pads to rows of similar length (Rotten Tomatoes'
    reviews in dataset order pad to 1.9x their tokens). Parametrized weights (pruning masks, QAT's fake
    quantization) are computed once for all batches, not once per batch. `progress`: a progress bar's label."""
    was_training = model.training
    model.eval()
    device = getattr(model, "device", None) or next(model.parameters()).device
    make_batch = batch_maker(dataset, tokenizer, model)
    order = np.argsort([len(ids) for ids in dataset["input_ids"]], kind="stable")
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    with parametrize.cached():
        for start in tqdm(range(0, len(dataset), batch_size), desc=progress, unit="batch", disable=progress is None):
            batch = make_batch(order[start : start + batch_size].tolist())
            out = model(**{k: v.to(device) for k, v in batch.items() if k not in TARGETS and k != TEACHER_LOGITS})
            for name in outputs:
                chunks[name].append(out[name].float().cpu().numpy())
    model.train(was_training)
    restore = np.argsort(order)
    return {name: np.concatenate(parts)[restore] for name, parts in chunks.items()}


def evaluate_splits(task, model, splits: list[str], batch_size: int, tokenizer) -> dict[str, float]:
    """{"<split>/<metric>": value} over `splits`."""
    return {f"{split}/{k}": v for split in splits for k, v in task.score(model, split, batch_size, tokenizer).items()}


def scored_splits(task, with_test: bool) -> list[str]:
    return list(task.eval_sets) + (["test"] if with_test and task.test is not None else [])
