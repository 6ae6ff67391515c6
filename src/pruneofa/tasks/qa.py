"""Extractive question answering (SQuAD v1.1/v2.0): loading, windowed features, span decoding.

A context longer than the window is cut into overlapping windows ("features"): each holds
`[CLS] question [SEP] context-slice [SEP]`, consecutive slices sharing `doc_stride` tokens
(`return_overflowing_tokens`). Training marks the answer's first/last token in the window that
holds it entirely, and the CLS token in every other window (and for unanswerable questions).
Decoding scores a span (s, e) of a window by start_logit[s] + end_logit[e], keeps the best over
all windows of a question, and maps it back to context characters through the offsets.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from datasets import DatasetDict, load_dataset

from pruneofa.errors import UserError
from pruneofa.tasks.config import TaskDataConfig, is_qa_task
from pruneofa.tasks.squad_format import read_squad_file
from pruneofa.tasks.task_data import limit_splits

HUB_IDS = {"squad": "rajpurkar/squad", "squad_v2": "rajpurkar/squad_v2"}
CONTEXT = 1  # sequence id of the context in (question, context) pairs
EVAL_ONLY_COLUMNS = ("example_id", "offset_mapping", "cls_index")  # decoding needs them, the model must not see them


def load_qa(cfg: TaskDataConfig) -> DatasetDict:
    """Splits (train/validation/(test), whichever exist) of flat records: id, title, context,
    question, answers {text: [...], answer_start: [...]}; empty answers = unanswerable."""
    if not is_qa_task(cfg.task):
        raise ValueError(f"{cfg.task} is not a QA task: load it with pruneofa.tasks.classification.load_task")
    if cfg.task in HUB_IDS:
        splits = _load_hub(cfg.task)
    else:
        files = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}
        splits = DatasetDict(
            {split: read_squad_file(path, f"data.{split}_file") for split, path in files.items() if path}
        )
        if not cfg.with_negative:
            _reject_unanswerable(splits)
    return limit_splits(splits, cfg.max_train_samples, cfg.max_eval_samples)


def _load_hub(task: str) -> DatasetDict:
    try:
        raw = load_dataset(HUB_IDS[task])
    except Exception as error:  # offline, hub down, missing cache: all end the same way for the user
        raise UserError(
            f"{task} can't be reached on the Hugging Face hub ({type(error).__name__})",
            "run once online to cache it, or use data.task=qa with local SQuAD JSON files",
        ) from None
    return DatasetDict(train=raw["train"], validation=raw["validation"])


def _reject_unanswerable(splits: DatasetDict) -> None:
    for split in ("train", "validation"):  # a test file may carry no answers at all
        if split not in splits:
            continue
        dataset = splits[split]
        unanswerable = [qid for qid, answers in zip(dataset["id"], dataset["answers"]) if not answers["text"]]
        if unanswerable:
            raise UserError(
                f"data.{split}_file has {len(unanswerable)} question(s) without an answer (e.g. {unanswerable[0]})",
                "set data.version_2_with_negative=true for SQuAD v2 data",
            )


def qa_references(examples) -> dict[str, list[str]]:
    """{id: gold answer texts} for `squad_metrics`; [] marks an unanswerable question."""
    return {qid: list(answers["text"]) for qid, answers in zip(examples["id"], examples["answers"])}


def _encode(tokenizer, examples, max_seq_len: int, doc_stride: int, padding):
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("QA needs a fast tokenizer (for character offsets)", "use a model that ships tokenizer.json")
    # Some SQuAD questions start with lots of whitespace, which only wastes window space.
    questions = [question.lstrip() for question in examples["question"]]
    # Check the window has room before the Rust tokenizer panics on it (a BaseException, with a backtrace).
    question_lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    longest = max(question_lengths, default=0)
    room = max_seq_len - tokenizer.num_special_tokens_to_add(pair=True) - longest
    if room <= doc_stride:
        raise UserError(
            f"a {longest}-token question leaves {room} context tokens per {max_seq_len}-token window, "
            f"which must exceed doc_stride {doc_stride}",
            "raise data.max_seq_len or lower data.doc_stride (SQuAD: 384 and 128)",
        )
    return tokenizer(
        questions,
        list(examples["context"]),
        truncation="only_second",
        max_length=max_seq_len,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=padding,
    )


def _cls_index(input_ids: list[int], tokenizer) -> int:
    cls_id = tokenizer.cls_token_id
    return input_ids.index(cls_id) if cls_id is not None and cls_id in input_ids else 0


def _context_range(sequence_ids: list) -> tuple[int, int] | None:
    """First and last token index of the context in one window, or None if it holds no context."""
    positions = [i for i, sid in enumerate(sequence_ids) if sid == CONTEXT]
    return (positions[0], positions[-1]) if positions else None


def _answer_tokens(offsets, context: tuple[int, int] | None, answers: dict, cls_index: int) -> tuple[int, int]:
    """(first, last) token of the first gold answer, or (CLS, CLS) if the window does not hold it whole."""
    if not answers["answer_start"] or context is None:
        return cls_index, cls_index
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    first, last = context
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls_index, cls_index
    start = first
    while start <= last and offsets[start][0] <= start_char:  # stop one past the token holding start_char
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:  # stop one before the token holding end_char
        end -= 1
    return start - 1, end + 1


def prepare_train_features(examples, tokenizer, max_seq_len: int, doc_stride: int, padding="max_length") -> dict:
    """Batched `Dataset.map` function: examples → windows with `start_positions`/`end_positions`.

    Positions are token indices of the answer's first/last token (its first gold answer) when the
    window holds the whole answer, else the CLS index (also for unanswerable questions). Drop the
    example columns: `dataset.map(fn, batched=True, remove_columns=dataset.column_names)`.
    """
    encoded = _encode(tokenizer, examples, max_seq_len, doc_stride, padding)
    sample_map = encoded.pop("overflow_to_sample_mapping")
    all_offsets = encoded.pop("offset_mapping")
    starts, ends = [], []
    for i, offsets in enumerate(all_offsets):
        cls_index = _cls_index(encoded["input_ids"][i], tokenizer)
        answers = examples["answers"][sample_map[i]]
        start, end = _answer_tokens(offsets, _context_range(encoded.sequence_ids(i)), answers, cls_index)
        starts.append(start)
        ends.append(end)
    encoded["start_positions"] = starts
    encoded["end_positions"] = ends
    return encoded


def prepare_eval_features(examples, tokenizer, max_seq_len: int, doc_stride: int, padding="max_length") -> dict:
    """Batched `Dataset.map` function: examples → windows with `example_id`, `cls_index` and
    `offset_mapping`, where offsets of non-context tokens (question, special, padding) are None so
    that decoding can only pick context spans. Drop `EVAL_ONLY_COLUMNS` before feeding the model."""
    encoded = _encode(tokenizer, examples, max_seq_len, doc_stride, padding)
    sample_map = encoded.pop("overflow_to_sample_mapping")
    encoded["example_id"] = [examples["id"][sample] for sample in sample_map]
    encoded["cls_index"] = [_cls_index(input_ids, tokenizer) for input_ids in encoded["input_ids"]]
    encoded["offset_mapping"] = [
        [offset if sid == CONTEXT else None for offset, sid in zip(offsets, encoded.sequence_ids(i))]
        for i, offsets in enumerate(encoded["offset_mapping"])
    ]
    return encoded


def _columns(table) -> list[str]:
    return list(table.column_names) if hasattr(table, "column_names") else list(table)


def postprocess_qa_predictions(
    examples,
    features,
    start_logits,
    end_logits,
    n_best: int = 20,
    max_answer_len: int = 30,
    version_2_with_negative: bool = False,
    null_threshold: float = 0.0,
) -> dict[str, str]:
    """Best answer text per example id.

    `examples` has `id`, `context`; `features` (from `prepare_eval_features`) has `example_id`,
    `offset_mapping` and `cls_index` (0 if absent); logits are (n_features, seq_len), aligned with
    `features`. For each window, the `n_best` highest start and the `n_best` highest end logits
    among its context tokens are paired; a pair is kept if start ≤ end and end − start + 1 ≤
    `max_answer_len`. The best score start_logit[s] + end_logit[e] over all windows wins. With `version_2_with_negative`, the
    null score is the lowest start_logit[CLS] + end_logit[CLS] over the windows, and the answer
    is "" when null_score − best_span_score > `null_threshold` (or when no span is valid). Without
    it, "" only when no window offers a valid span.
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    example_ids = list(features["example_id"])
    if not len(start_logits) == len(end_logits) == len(example_ids):
        raise ValueError(
            f"{len(start_logits)} start and {len(end_logits)} end logit rows for {len(example_ids)} features"
        )
    windows_of = defaultdict(list)
    for index, example_id in enumerate(example_ids):
        windows_of[example_id].append(index)
    all_offsets = list(features["offset_mapping"])
    cls_indices = list(features["cls_index"]) if "cls_index" in _columns(features) else [0] * len(example_ids)

    predictions: dict[str, str] = {}
    for qid, context in zip(examples["id"], examples["context"]):
        best_score, best_text, null_score = -np.inf, "", np.inf
        for index in windows_of.get(qid, []):
            offsets = all_offsets[index]
            starts, ends = start_logits[index][: len(offsets)], end_logits[index][: len(offsets)]
            cls_index = cls_indices[index]
            null_score = min(null_score, float(starts[cls_index] + ends[cls_index]))
            # Candidates come from context tokens only, so padding/question tokens cannot use up n_best.
            context_tokens = np.flatnonzero([offset is not None for offset in offsets])
            top_starts = context_tokens[np.argsort(-starts[context_tokens], kind="stable")[:n_best]]
            top_ends = context_tokens[np.argsort(-ends[context_tokens], kind="stable")[:n_best]]
            for s in top_starts:
                for e in top_ends:
                    if e < s or e - s + 1 > max_answer_len:
                        continue
                    score = float(starts[s] + ends[e])
                    if score > best_score:
                        best_score, best_text = score, context[offsets[s][0] : offsets[e][1]]
        if version_2_with_negative and null_score - best_score > null_threshold:
            best_text = ""
        predictions[qid] = best_text
    return predictions
