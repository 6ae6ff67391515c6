"""Loading sequence-classification/regression tasks (GLUE, local files, rotten_tomatoes) and
tokenizing them for `transformers.DataCollatorWithPadding`."""

from __future__ import annotations

from datasets import ClassLabel, Dataset, DatasetDict, Value, load_dataset

from pruneofa.errors import UserError
from pruneofa.tasks.config import GLUE_TEXT_COLUMNS, TaskDataConfig, is_qa_task
from pruneofa.tasks.local_files import load_local_file
from pruneofa.tasks.rotten_tomatoes import load_rotten_tomatoes
from pruneofa.tasks.task_data import TaskData, limit_splits

GLUE_HUB_ID = "nyu-mll/glue"


def load_task(cfg: TaskDataConfig) -> TaskData:
    """Load the classification/regression task named by `cfg.task`; see `TaskData` for the layout.

    GLUE test splits are dropped (their labels are hidden, -1). `max_train_samples` keeps the first
    N training rows and `max_eval_samples` the first N rows of every other split.
    """
    if is_qa_task(cfg.task):
        raise ValueError(f"{cfg.task} is a QA task: load it with pruneofa.tasks.qa.load_qa")
    if cfg.task in GLUE_TEXT_COLUMNS:
        data = _load_glue(cfg.task)
    elif cfg.task == "rotten_tomatoes":
        data = load_rotten_tomatoes()
    else:
        data = _load_local(cfg)
    data.splits = limit_splits(data.splits, cfg.max_train_samples, cfg.max_eval_samples)
    return data


def _load_glue(task: str) -> TaskData:
    try:
        raw = load_dataset(GLUE_HUB_ID, task)
    except Exception as error:  # offline, hub down, missing cache: all end the same way for the user
        raise UserError(
            f"GLUE {task} can't be reached on the Hugging Face hub ({type(error).__name__})",
            "run once online to cache it, or use data.task=csv with local train/validation files",
        ) from None
    if task == "mnli":
        splits = DatasetDict(
            train=raw["train"],
            validation=raw["validation_matched"],
            validation_matched=raw["validation_matched"],
            validation_mismatched=raw["validation_mismatched"],
        )
    else:
        splits = DatasetDict(train=raw["train"], validation=raw["validation"])
    is_regression = task == "stsb"
    label_names = None if is_regression else list(raw["train"].features["label"].names)
    return TaskData(task, splits, list(GLUE_TEXT_COLUMNS[task]), label_names, is_regression)


def _load_local(cfg: TaskDataConfig) -> TaskData:
    text_columns = cfg.resolved_text_columns
    files = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}
    raw: dict[str, Dataset] = {}
    for split, path in files.items():
        if path is None:
            continue
        setting = f"data.{split}_file"
        dataset = load_local_file(path, setting)
        needs_label = split != "test"  # a test file may be predict-only
        _check_columns(dataset, text_columns + ([cfg.label_column] if needs_label else []), setting, path)
        raw[split] = _texts_as_strings(dataset, text_columns)

    if cfg.regression:
        splits = DatasetDict({split: _regression_targets(ds, cfg.label_column, split) for split, ds in raw.items()})
        return TaskData("csv", splits, text_columns, None, is_regression=True)

    label_names = cfg.labels or _infer_label_names(raw["train"][cfg.label_column])
    given = cfg.labels is not None
    splits = DatasetDict(
        {split: _class_ids(ds, cfg.label_column, label_names, split, given) for split, ds in raw.items()}
    )
    return TaskData("csv", splits, text_columns, label_names, is_regression=False)


def _check_columns(dataset: Dataset, required: list[str], setting: str, path: str) -> None:
    missing = [name for name in required if name not in dataset.column_names]
    if missing:
        raise UserError(
            f"{setting} {path} has no column(s) {', '.join(missing)} "
            f"(columns present: {', '.join(dataset.column_names)})",
            "set data.text_columns / data.label_column to columns the file has",
        )
    for name in required:
        nulls = dataset.data.column(name).null_count
        if nulls:
            raise UserError(f"{setting} {path}: column {name} is empty in {nulls} row(s)", "fill or drop those rows")


def _texts_as_strings(dataset: Dataset, text_columns: list[str]) -> Dataset:
    # A column of numbers-only texts is parsed as numbers; tokenizers need str.
    for name in text_columns:
        if dataset.features[name] != Value("string"):
            dataset = dataset.cast_column(name, Value("string"))
    return dataset


def _label_key(value) -> str:
    """Labels compare as strings, so 1, 1.0 and "1" are the same label."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _infer_label_names(values: list) -> list[str]:
    distinct = set(values)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct)
    ordered = sorted(distinct) if numeric else sorted(distinct, key=str)
    names = list(dict.fromkeys(_label_key(v) for v in ordered))
    if len(names) < 2:
        raise UserError(
            f"the training file has a single label value ({names[0]})",
            "a classifier needs at least 2 classes; for real-valued targets set data.regression=true",
        )
    return names


def _class_ids(dataset: Dataset, label_column: str, label_names: list[str], split: str, given: bool) -> Dataset:
    if label_column not in dataset.column_names:  # predict-only test file
        return dataset
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({_label_key(v) for v in dataset[label_column]} - index.keys())
    if unknown:
        source = "data.labels" if given else "the train file"
        raise UserError(
            f"the {split} split has labels not in {source}: {', '.join(unknown[:5])}"
            + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""),
            f"known labels are {', '.join(label_names)}; fix the data or set data.labels",
        )
    ids = [index[_label_key(v)] for v in dataset[label_column]]
    dataset = dataset.remove_columns(label_column)
    if "label" in dataset.column_names:  # another column already called label; ours wins
        dataset = dataset.remove_columns("label")
    return dataset.add_column("label", ids).cast_column("label", ClassLabel(names=label_names))


def _regression_targets(dataset: Dataset, label_column: str, split: str) -> Dataset:
    if label_column not in dataset.column_names:
        return dataset
    try:
        targets = [float(v) for v in dataset[label_column]]
    except (TypeError, ValueError):
        bad = next(v for v in dataset[label_column] if not _is_number(v))
        raise UserError(
            f"the {split} split has a non-numeric regression label {bad!r} in column {label_column}",
            "regression needs numbers; or set data.regression=false for classes",
        ) from None
    dataset = dataset.remove_columns(label_column)
    if "label" in dataset.column_names:
        dataset = dataset.remove_columns("label")
    return dataset.add_column("label", targets).cast_column("label", Value("float32"))


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def tokenize_task(data: TaskData, tokenizer, max_seq_len: int) -> DatasetDict:
    """Every split → input_ids, attention_mask (token_type_ids if the tokenizer makes them) and
    `labels` (absent for a predict-only test split), truncated to `max_seq_len`, unpadded: pad per
    batch with `DataCollatorWithPadding`. A text pair is encoded as one sequence pair."""

    def encode(batch: dict) -> dict:
        encoded = tokenizer(*(batch[name] for name in data.text_columns), truncation=True, max_length=max_seq_len)
        if "label" in batch:
            encoded["labels"] = batch["label"]
        return encoded

    return DatasetDict(
        {
            name: dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=f"tokenize {name}")
            for name, dataset in data.splits.items()
        }
    )
