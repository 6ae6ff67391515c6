import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import DataCollatorWithPadding

import pruneofa.tasks.classification as classification
from pruneofa.errors import UserError
from pruneofa.tasks import TaskDataConfig, load_task, tokenize_task

TRAIN = pd.DataFrame(
    {
        "premise": ["a man sleeps", "a dog runs", "it rains", "the sun is out", "kids play"],
        "hypothesis": ["a person rests", "a cat sits", "it is wet", "it is night", "children are outside"],
        "label": ["entailment", "neutral", "entailment", "contradiction", "entailment"],
    }
)
VALIDATION = pd.DataFrame(
    {
        "premise": ["birds sing", "snow falls"],
        "hypothesis": ["it is quiet", "it is cold"],
        "label": ["contradiction", "neutral"],
    }
)


def write(frame: pd.DataFrame, path) -> str:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    return str(path)


def pair_config(tmp_path, suffix=".csv", train=TRAIN, validation=VALIDATION, **overrides) -> TaskDataConfig:
    fields = dict(
        task="csv",
        train_file=write(train, tmp_path / f"train{suffix}"),
        validation_file=write(validation, tmp_path / f"validation{suffix}"),
        text_columns=["premise", "hypothesis"],
    )
    return TaskDataConfig(**(fields | overrides))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_pair_classification_with_inferred_labels(tmp_path, suffix):
    data = load_task(pair_config(tmp_path, suffix))
    assert data.label_names == ["contradiction", "entailment", "neutral"]  # sorted, since none were given
    assert data.num_labels == 3 and not data.is_regression
    assert set(data.splits) == {"train", "validation"} and data.eval_split_names == ["validation"]
    for split, frame in (("train", TRAIN), ("validation", VALIDATION)):
        rows = data.splits[split]
        assert [data.label_names[i] for i in rows["label"]] == list(frame["label"])
        assert list(rows["premise"]) == list(frame["premise"])
    assert data.splits["train"].features["label"] == ClassLabel(names=data.label_names)


def test_given_label_order_and_other_label_column(tmp_path):
    train = TRAIN.rename(columns={"label": "gold"})
    validation = VALIDATION.rename(columns={"label": "gold"})
    names = ["entailment", "neutral", "contradiction"]
    data = load_task(pair_config(tmp_path, train=train, validation=validation, label_column="gold", labels=names))
    assert data.label_names == names
    assert list(data.splits["train"]["label"]) == [names.index(v) for v in TRAIN["label"]]
    assert "gold" not in data.splits["train"].column_names


def test_integer_labels_sorted_numerically(tmp_path):
    train = pd.DataFrame({"text": [f"t{i}" for i in range(4)], "label": [10, 2, 2, 10]})
    validation = pd.DataFrame({"text": ["v"], "label": [2]})
    cfg = pair_config(tmp_path, train=train, validation=validation, text_columns=["text"])
    data = load_task(cfg)
    assert data.label_names == ["2", "10"]
    assert list(data.splits["train"]["label"]) == [1, 0, 0, 1]


def test_unknown_validation_label(tmp_path):
    validation = VALIDATION.assign(label=["contradiction", "maybe"])
    with pytest.raises(UserError, match="validation split has labels not in the train file: maybe"):
        load_task(pair_config(tmp_path, validation=validation))
    with pytest.raises(UserError, match="not in data.labels: neutral"):
        load_task(pair_config(tmp_path, labels=["entailment", "contradiction"]))


def test_missing_columns_named_with_present_ones(tmp_path):
    with pytest.raises(UserError) as caught:
        load_task(pair_config(tmp_path, text_columns=["sentence1", "hypothesis"]))
    message = str(caught.value)
    assert "no column(s) sentence1" in message and "premise, hypothesis, label" in message
    assert "\n" not in message


def test_missing_empty_and_unsupported_files(tmp_path):
    cfg = pair_config(tmp_path)
    with pytest.raises(UserError, match="data.validation_file .* does not exist"):
        load_task(cfg.model_copy(update={"validation_file": str(tmp_path / "nope.csv")}))
    empty = tmp_path / "empty.csv"
    empty.write_text("premise,hypothesis,label\n")
    with pytest.raises(UserError, match="holds no rows"):
        load_task(cfg.model_copy(update={"train_file": str(empty)}))
    odd = tmp_path / "train.xlsx"
    odd.write_text("x")
    with pytest.raises(UserError, match="unsupported extension .xlsx"):
        load_task(cfg.model_copy(update={"train_file": str(odd)}))


def test_empty_text_cell_and_single_class(tmp_path):
    holes = TRAIN.assign(hypothesis=["x", None, "y", "z", "w"])
    with pytest.raises(UserError, match="column hypothesis is empty in 1 row"):
        load_task(pair_config(tmp_path, train=holes))
    one_class = TRAIN.assign(label="entailment")
    with pytest.raises(UserError, match="single label value"):
        load_task(pair_config(tmp_path, train=one_class))


def test_regression(tmp_path):
    train = pd.DataFrame({"a": ["x", "y", "z"], "b": ["p", "q", "r"], "score": [0.5, 4.0, 2.25]})
    validation = pd.DataFrame({"a": ["w"], "b": ["s"], "score": [3]})
    settings = dict(text_columns=["a", "b"], label_column="score", regression=True)
    data = load_task(pair_config(tmp_path, train=train, validation=validation, **settings))
    assert data.is_regression and data.num_labels == 1 and data.label_names is None
    assert list(data.splits["train"]["label"]) == [0.5, 4.0, 2.25]
    assert data.splits["validation"].features["label"] == Value("float32")
    bad = validation.assign(score=["high"])
    with pytest.raises(UserError, match="non-numeric regression label 'high'"):
        load_task(pair_config(tmp_path, train=train, validation=bad, **settings))


def test_limits_and_predict_only_test_file(tmp_path, minilm_tokenizer):
    test = pd.DataFrame({"premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"]})
    cfg = pair_config(tmp_path, test_file=write(test, tmp_path / "test.csv"), max_train_samples=2, max_eval_samples=1)
    data = load_task(cfg)
    assert [len(data.splits[s]) for s in ("train", "validation", "test")] == [2, 1, 1]
    assert list(data.splits["train"]["premise"]) == list(TRAIN["premise"][:2])  # the first N, not a sample
    encoded = tokenize_task(data, minilm_tokenizer, max_seq_len=16)
    assert "labels" not in encoded["test"].column_names and "labels" in encoded["train"].column_names


def test_tokenize_pairs_for_the_padding_collator(tmp_path, minilm_tokenizer):
    data = load_task(pair_config(tmp_path))
    encoded = tokenize_task(data, minilm_tokenizer, max_seq_len=16)
    train = encoded["train"]
    assert set(train.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert list(train["labels"]) == list(data.splits["train"]["label"])
    first = minilm_tokenizer(TRAIN["premise"][0], TRAIN["hypothesis"][0])
    assert train[0]["input_ids"] == first["input_ids"]  # short enough not to be truncated
    assert 1 in train[0]["token_type_ids"]  # the hypothesis is the second segment
    truncated = tokenize_task(data, minilm_tokenizer, max_seq_len=8)["train"]
    assert max(len(ids) for ids in truncated["input_ids"]) == 8 < len(first["input_ids"])
    batch = DataCollatorWithPadding(minilm_tokenizer)([train[i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 3 and batch["labels"].tolist() == list(train["labels"][:3])


def fake_glue(name: str) -> DatasetDict:
    names = ["entailment", "neutral", "contradiction"]
    text = Value("string")
    features = Features({"premise": text, "hypothesis": text, "label": ClassLabel(names=names), "idx": Value("int32")})

    def rows(n: int) -> dict:
        return {"premise": ["p"] * n, "hypothesis": ["h"] * n, "label": [0] * n, "idx": list(range(n))}

    test_rows = rows(2) | {"label": [-1, -1]}
    return DatasetDict(
        train=Dataset.from_dict(rows(4), features=features),
        validation_matched=Dataset.from_dict(rows(3), features=features),
        validation_mismatched=Dataset.from_dict(rows(2), features=features),
        test_matched=Dataset.from_dict(test_rows, features=features),
    )


def test_glue_mnli_layout_without_network(monkeypatch):
    calls = []
    def fake_load_dataset(path, name):
        calls.append((path, name))
        return fake_glue(name)

    monkeypatch.setattr(classification, "load_dataset", fake_load_dataset)
    data = load_task(TaskDataConfig(task="mnli", max_eval_samples=2))
    assert calls == [("nyu-mll/glue", "mnli")]
    assert set(data.splits) == {"train", "validation", "validation_matched", "validation_mismatched"}
    assert data.eval_split_names == ["validation_matched", "validation_mismatched"]
    assert data.label_names == ["entailment", "neutral", "contradiction"]
    assert data.text_columns == ["premise", "hypothesis"]
    assert len(data.splits["validation_matched"]) == 2 and len(data.splits["train"]) == 4


def test_glue_unreachable_points_to_csv(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(classification, "load_dataset", offline)
    with pytest.raises(UserError, match="can't be reached.*data.task=csv"):
        load_task(TaskDataConfig(task="sst2"))


def test_qa_config_is_not_a_classification_task():
    with pytest.raises(ValueError, match="load_qa"):
        load_task(TaskDataConfig(task="squad", max_seq_len=384))


def test_unparsable_file_reports_the_parser_message(tmp_path):
    broken = tmp_path / "train.jsonl"
    broken.write_text('{"premise": "a", "hypothesis": "b", "label": "x"}\n{oops\n')
    with pytest.raises(UserError, match=r"could not be read as json \(ArrowInvalid: JSON parse error") as caught:
        load_task(pair_config(tmp_path).model_copy(update={"train_file": str(broken)}))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("regression", [False, True])
def test_tokenized_batches_train_a_real_model(tmp_path, minilm_tokenizer, regression):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    if regression:
        train = pd.DataFrame({"a": ["x y", "y z", "z"], "b": ["p", "q r", "r"], "label": [0.5, 4.0, 2.25]})
        cfg = pair_config(tmp_path, train=train, validation=train, text_columns=["a", "b"], regression=True)
    else:
        cfg = pair_config(tmp_path)
    data = load_task(cfg)
    encoded = tokenize_task(data, minilm_tokenizer, max_seq_len=16)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(minilm_tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=data.num_labels)
    model = BertForSequenceClassification(config)
    batch = DataCollatorWithPadding(minilm_tokenizer)([encoded["train"][i] for i in range(3)])
    output = model(**batch)
    assert output.logits.shape == (3, data.num_labels)
    assert model.config.problem_type == ("regression" if regression else "single_label_classification")
    assert torch.isfinite(output.loss)
