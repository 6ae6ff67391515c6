import json

import numpy as np
import pytest
from datasets import Dataset

import pruneofa.tasks.qa as qa
from pruneofa.errors import UserError
from pruneofa.tasks import (
    EVAL_ONLY_COLUMNS,
    TaskDataConfig,
    load_qa,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    qa_references,
    task_metrics,
)

ANSWER = "Heligoland Zanzibar Treaty"
FILLER = [f"Sentence number {i} says nothing in particular about anything." for i in range(24)]
LONG_CONTEXT = " ".join(FILLER[:13] + [f"In 1890 the {ANSWER} was signed in Berlin."] + FILLER[13:])
SHORT_CONTEXT = "Paris is the capital of France."
MAX_SEQ_LEN, DOC_STRIDE = 48, 16


def squad_json(version_2=False) -> dict:
    long_start = LONG_CONTEXT.index(ANSWER)
    qas_long = [
        {
            "id": "long",
            "question": "  Which treaty was signed in 1890?",  # leading blanks, as some SQuAD questions have
            "answers": [{"text": ANSWER, "answer_start": long_start}],
        }
    ]
    qas_short = [
        {"id": "short", "question": "What is the capital of France?", "answers": [{"text": "Paris", "answer_start": 0}]}
    ]
    if version_2:
        qas_short.append(
            {"id": "none", "question": "What is the capital of Spain?", "answers": [], "is_impossible": True,
             "plausible_answers": [{"text": "Paris", "answer_start": 0}]}
        )
    return {
        "version": "v2.0" if version_2 else "1.1",
        "data": [
            {"title": "Treaties", "paragraphs": [{"context": LONG_CONTEXT, "qas": qas_long}]},
            {"title": "France", "paragraphs": [{"context": SHORT_CONTEXT, "qas": qas_short}]},
        ],
    }


def write_json(path, content) -> str:
    path.write_text(json.dumps(content))
    return str(path)


def qa_config(tmp_path, content=None, **overrides) -> TaskDataConfig:
    file = write_json(tmp_path / "dev.json", content or squad_json())
    fields = dict(task="qa", train_file=file, validation_file=file, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE)
    return TaskDataConfig(**(fields | overrides))


@pytest.fixture
def examples(tmp_path) -> Dataset:
    return load_qa(qa_config(tmp_path))["validation"]


def test_nested_and_flat_layouts_give_the_same_records(tmp_path, examples):
    assert examples["id"] == ["long", "short"] and examples["title"] == ["Treaties", "France"]
    assert examples[0]["answers"] == {"text": [ANSWER], "answer_start": [LONG_CONTEXT.index(ANSWER)]}
    flat = tmp_path / "flat.jsonl"
    flat.write_text("\n".join(json.dumps(row) for row in examples))
    as_list = write_json(tmp_path / "flat.json", list(examples))
    for path in (str(flat), as_list):
        cfg = TaskDataConfig(task="qa", validation_file=path, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE)
        assert list(load_qa(cfg)["validation"]) == list(examples)


def test_train_features_mark_the_gold_span_or_cls(examples, minilm_tokenizer):
    features = prepare_train_features(examples[:], minilm_tokenizer, MAX_SEQ_LEN, DOC_STRIDE)
    encoded = minilm_tokenizer(
        [q.lstrip() for q in examples["question"]], list(examples["context"]), truncation="only_second",
        max_length=MAX_SEQ_LEN, stride=DOC_STRIDE, return_overflowing_tokens=True, return_offsets_mapping=True,
    )
    long_windows = [i for i, sample in enumerate(encoded["overflow_to_sample_mapping"]) if sample == 0]
    assert len(long_windows) >= 4  # the context really is cut into several overflowing windows
    answer_start = LONG_CONTEXT.index(ANSWER)
    answer_end = answer_start + len(ANSWER)
    windows_with_answer = 0
    for i in long_windows:
        context_offsets = [o for o, sid in zip(encoded["offset_mapping"][i], encoded.sequence_ids(i)) if sid == 1]
        holds_answer = context_offsets[0][0] <= answer_start and context_offsets[-1][1] >= answer_end
        start, end = features["start_positions"][i], features["end_positions"][i]
        if holds_answer:
            windows_with_answer += 1
            offsets = encoded["offset_mapping"][i]
            assert LONG_CONTEXT[offsets[start][0] : offsets[end][1]] == ANSWER
        else:
            assert (start, end) == (0, 0)  # CLS: answer not (wholly) in this window
    assert 1 <= windows_with_answer < len(long_windows)
    assert all(len(ids) == MAX_SEQ_LEN for ids in features["input_ids"])  # padded to the window


def eval_features(examples, tokenizer) -> Dataset:
    return examples.map(
        prepare_eval_features,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs=dict(tokenizer=tokenizer, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE),
    )


def one_hot_logits(features: Dataset, examples: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """1 at the gold start/end tokens of the first window holding each gold answer, 0 elsewhere."""
    starts = np.zeros((len(features), MAX_SEQ_LEN))
    ends = np.zeros((len(features), MAX_SEQ_LEN))
    for example in examples:
        if not example["answers"]["text"]:
            continue
        start_char = example["answers"]["answer_start"][0]
        end_char = start_char + len(example["answers"]["text"][0])
        for i, feature in enumerate(features):
            if feature["example_id"] != example["id"]:
                continue
            token_starts = [t for t, o in enumerate(feature["offset_mapping"]) if o is not None and o[0] == start_char]
            token_ends = [t for t, o in enumerate(feature["offset_mapping"]) if o is not None and o[1] == end_char]
            if token_starts and token_ends:
                starts[i, token_starts[0]] = ends[i, token_ends[0]] = 1.0
                break
        else:
            raise AssertionError(f"no window holds the answer of {example['id']}")
    return starts, ends


def test_one_hot_logits_recover_gold_spans_across_windows(examples, minilm_tokenizer):
    features = eval_features(examples, minilm_tokenizer)
    assert features["example_id"].count("long") >= 4
    assert set(EVAL_ONLY_COLUMNS) <= set(features.column_names)
    first = features[0]
    assert all(o is None for o, t in zip(first["offset_mapping"], first["token_type_ids"]) if t == 0)  # question, CLS
    starts, ends = one_hot_logits(features, examples)
    predictions = postprocess_qa_predictions(examples, features, starts, ends, n_best=20, max_answer_len=30)
    assert predictions == {"long": ANSWER, "short": "Paris"}
    assert task_metrics("qa", predictions, qa_references(examples)) == {"exact_match": 100.0, "f1": 100.0}


def test_max_answer_len_excludes_longer_spans(examples, minilm_tokenizer):
    features = eval_features(examples, minilm_tokenizer)
    starts, ends = one_hot_logits(features, examples)
    answer_tokens = len(minilm_tokenizer(ANSWER, add_special_tokens=False)["input_ids"])
    assert answer_tokens >= 3
    # n_best = the window, so every context token is a candidate: the best allowed span then scores
    # 1 (gold start + a nearer end, found first) instead of 2.
    exact = postprocess_qa_predictions(examples, features, starts, ends, MAX_SEQ_LEN, max_answer_len=answer_tokens)
    cut = postprocess_qa_predictions(examples, features, starts, ends, MAX_SEQ_LEN, max_answer_len=answer_tokens - 1)
    assert exact["long"] == ANSWER
    assert cut["long"] != ANSWER and ANSWER.startswith(cut["long"])  # same start, shorter end


def test_no_answer_and_null_threshold(tmp_path, minilm_tokenizer):
    cfg = qa_config(tmp_path, squad_json(version_2=True), version_2_with_negative=True)
    examples = load_qa(cfg)["validation"]
    assert examples[2]["answers"] == {"text": [], "answer_start": []}
    features = eval_features(examples, minilm_tokenizer)
    starts, ends = one_hot_logits(features, examples)
    none_rows = [i for i, qid in enumerate(features["example_id"]) if qid == "none"]
    starts[none_rows, 0] = ends[none_rows, 0] = 5.0  # CLS clearly wins: null score 10 vs best span ≤ 0
    predictions = postprocess_qa_predictions(examples, features, starts, ends, version_2_with_negative=True)
    assert predictions == {"long": ANSWER, "short": "Paris", "none": ""}
    scores = task_metrics("squad_v2", predictions, qa_references(examples))
    assert scores["exact_match"] == 100.0 and scores["NoAns_total"] == 1
    # "short": null score 0 + 0 = 0, best span 1 + 1 = 2 → span unless the threshold is below -2
    low = postprocess_qa_predictions(
        examples, features, starts, ends, version_2_with_negative=True, null_threshold=-2.5
    )
    assert low["short"] == "" and low["long"] == ""
    v1 = postprocess_qa_predictions(examples, features, starts, ends, version_2_with_negative=False)
    assert v1["none"] != ""  # without v2 a span is always chosen


def test_unanswerable_questions_need_v2(tmp_path):
    with pytest.raises(UserError, match="without an answer .*version_2_with_negative=true"):
        load_qa(qa_config(tmp_path, squad_json(version_2=True)))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (
            lambda d: d["data"][1]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=3),
            "not at answer_start 3",
        ),
        (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(id="long"), "id long appears twice"),
        (lambda d: d["data"][1]["paragraphs"][0].pop("context"), "lacks context"),
        (lambda d: d.update(data=[]), "holds no questions"),
    ],
)
def test_malformed_squad_files(tmp_path, corrupt, message):
    content = squad_json()
    corrupt(content)
    with pytest.raises(UserError, match=message):
        load_qa(qa_config(tmp_path, content))


def test_window_too_small_for_the_stride(examples, minilm_tokenizer):
    with pytest.raises(UserError, match="must exceed doc_stride 30.*raise data.max_seq_len"):
        prepare_eval_features(examples[:], minilm_tokenizer, max_seq_len=40, doc_stride=30)


def test_limits_and_hub_unreachable(tmp_path, monkeypatch):
    splits = load_qa(qa_config(tmp_path, max_train_samples=1, max_eval_samples=1))
    assert len(splits["train"]) == 1 and len(splits["validation"]) == 1

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(qa, "load_dataset", offline)
    with pytest.raises(UserError, match="can't be reached.*data.task=qa"):
        load_qa(TaskDataConfig(task="squad", max_seq_len=384))


def test_features_feed_a_real_qa_model(examples, minilm_tokenizer):
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, default_data_collator

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(minilm_tokenizer), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=MAX_SEQ_LEN)
    model = BertForQuestionAnswering(config).eval()
    features = eval_features(examples, minilm_tokenizer)
    model_inputs = features.remove_columns(list(EVAL_ONLY_COLUMNS))
    batch = default_data_collator([model_inputs[i] for i in range(len(model_inputs))])
    with torch.no_grad():
        output = model(**batch)
    predictions = postprocess_qa_predictions(examples, features, output.start_logits.numpy(), output.end_logits.numpy())
    assert set(predictions) == {"long", "short"}
    for example in examples:
        assert predictions[example["id"]] in example["context"]  # always a span of its own context

    train = examples.map(prepare_train_features, batched=True, remove_columns=examples.column_names,
                         fn_kwargs=dict(tokenizer=minilm_tokenizer, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE))
    loss = model(**default_data_collator([train[i] for i in range(len(train))])).loss
    assert torch.isfinite(loss)
