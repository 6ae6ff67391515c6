"""Downstream-task data: loading, tokenizing and scoring GLUE-style classification/regression and
SQuAD-style extractive QA, for the finetune / transfer / eval stages.

Configuration
    `TaskDataConfig` (pydantic, extra keys rejected) — `task`, files, text/label columns, lengths.
    `is_qa_task(name)` — True for squad, squad_v2, qa.

Classification / regression (every task but QA)
    `load_task(cfg) -> TaskData`: `.splits` (DatasetDict train/validation/(test); MNLI adds
    validation_matched/validation_mismatched), `.text_columns`, `.label_names` (None for
    regression), `.num_labels` (1 for regression), `.is_regression`, `.eval_split_names`.
    `tokenize_task(data, tokenizer, max_seq_len) -> DatasetDict` of input_ids, attention_mask,
    (token_type_ids,) labels; unpadded, for `DataCollatorWithPadding`.

Extractive QA
    `load_qa(cfg) -> DatasetDict` of id/title/context/question/answers{text, answer_start}.
    `prepare_train_features(examples, tokenizer, max_seq_len, doc_stride)` and
    `prepare_eval_features(...)`: batched `Dataset.map` functions (windows over long contexts);
    eval features carry `EVAL_ONLY_COLUMNS`, to drop before the model sees them.
    `postprocess_qa_predictions(examples, features, start_logits, end_logits, n_best,
    max_answer_len, version_2_with_negative, null_threshold) -> {id: answer text}`.
    `qa_references(examples) -> {id: [gold texts]}`.

Metrics
    `task_metrics(task, predictions, references, is_regression=False) -> {name: value}`;
    `logits_to_predictions(logits, is_regression)`; the single metrics live in
    `pruneofa.tasks.metrics` and `pruneofa.tasks.squad_metrics`.

Typical classification use::

    data = load_task(cfg)
    encoded = tokenize_task(data, tokenizer, cfg.max_seq_len)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=data.num_labels)
    ...
    for split in data.eval_split_names:
        scores = task_metrics(data.name, logits_to_predictions(logits, data.is_regression),
                              encoded[split]["labels"], is_regression=data.is_regression)
"""

from pruneofa.tasks.classification import load_task, tokenize_task
from pruneofa.tasks.config import TaskDataConfig, is_qa_task
from pruneofa.tasks.metrics import logits_to_predictions, task_metrics
from pruneofa.tasks.qa import (
    EVAL_ONLY_COLUMNS,
    load_qa,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    qa_references,
)
from pruneofa.tasks.task_data import TaskData

__all__ = [
    "EVAL_ONLY_COLUMNS",
    "TaskData",
    "TaskDataConfig",
    "is_qa_task",
    "load_qa",
    "load_task",
    "logits_to_predictions",
    "postprocess_qa_predictions",
    "prepare_eval_features",
    "prepare_train_features",
    "qa_references",
    "task_metrics",
    "tokenize_task",
]
