import pytest
from pydantic import ValidationError

from pruneofa.tasks.config import TaskDataConfig, is_qa_task


def error_of(**fields) -> str:
    with pytest.raises(ValidationError) as caught:
        TaskDataConfig(**fields)
    messages = [e["msg"] for e in caught.value.errors()]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    return messages[0]


def test_glue_task_gets_its_fixed_text_columns():
    cfg = TaskDataConfig(task="mrpc")
    assert cfg.resolved_text_columns == ["sentence1", "sentence2"]
    assert TaskDataConfig(task="rotten_tomatoes").resolved_text_columns == ["text"]


def test_csv_needs_files_and_columns():
    assert "data.train_file" in error_of(task="csv", text_columns=["a"], validation_file="v.csv")
    assert "data.text_columns" in error_of(task="csv", train_file="t.csv", validation_file="v.csv")
    cfg = TaskDataConfig(task="csv", train_file="t.csv", validation_file="v.csv", text_columns=["a", "b"])
    assert cfg.resolved_text_columns == ["a", "b"]


def test_files_rejected_for_hub_tasks():
    assert "data.task=csv" in error_of(task="sst2", train_file="t.csv")


def test_text_columns_count_and_fixed_columns():
    assert "1 or 2" in error_of(task="csv", train_file="t", validation_file="v", text_columns=["a", "b", "c"])
    assert "fixed" in error_of(task="sst2", text_columns=["text"])
    TaskDataConfig(task="sst2", text_columns=["sentence"])  # restating the fixed columns is fine


def test_csv_only_settings_rejected_elsewhere():
    assert "data.labels" in error_of(task="sst2", labels=["a", "b"])
    assert "data.regression" in error_of(task="cola", regression=True)
    csv = dict(task="csv", train_file="t", validation_file="v", text_columns=["a"])
    assert "regression" in error_of(**csv, regression=True, labels=["a", "b"])
    assert "duplicates" in error_of(**csv, labels=["a", "a"])


def test_unknown_keys_and_tasks_rejected():
    with pytest.raises(ValidationError):
        TaskDataConfig(task="sst2", max_len=12)
    with pytest.raises(ValidationError):
        TaskDataConfig(task="imdb")


def test_qa_settings():
    assert is_qa_task("squad") and is_qa_task("qa") and not is_qa_task("sst2")
    assert "doc_stride" in error_of(task="squad")  # 128/128 cannot window
    assert TaskDataConfig(task="squad", max_seq_len=384).with_negative is False
    assert TaskDataConfig(task="squad_v2", max_seq_len=384).with_negative is True
    assert "squad_v2" in error_of(task="squad", max_seq_len=384, version_2_with_negative=True)
    assert "QA" in error_of(task="sst2", version_2_with_negative=True)
    assert "question and context" in error_of(task="squad", max_seq_len=384, text_columns=["question"])
    assert "validation_file" in error_of(task="qa", max_seq_len=384)
    cfg = TaskDataConfig(task="qa", validation_file="dev.json", max_seq_len=384, version_2_with_negative=True)
    assert cfg.with_negative
