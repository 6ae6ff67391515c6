"""Reading SQuAD-format files into flat records `id, title, context, question, answers`.

Accepted layouts (by content, not by name):

* official nested JSON: `{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
  "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}` (v1.1 and v2.0);
* flat Hugging Face records `{"id", "title"?, "context", "question", "answers": {"text": [...],
  "answer_start": [...]}}`, as a JSON list, under `"data"`, or one per line in a `.jsonl` file.

`answers` come out in the flat form; an unanswerable question (`is_impossible`) has empty lists.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, Features, List, Value

from pruneofa.errors import UserError

QA_FEATURES = Features(
    {
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
    }
)


def read_squad_file(path: str, setting: str) -> Dataset:
    """Parse and check one file (named by config key `setting` in messages) into a `Dataset`."""
    items = _read_items(path, setting)
    records: list[dict] = []
    for item in items:
        if not isinstance(item, dict):
            raise UserError(f"{setting} {path}: expected JSON objects, found {type(item).__name__}", "use SQuAD format")
        if "paragraphs" in item:
            records.extend(_from_article(item, path, setting))
        else:
            records.append(_from_flat(item, path, setting))
    if not records:
        raise UserError(f"{setting} {path} holds no questions", "add data to the file")
    _check(records, path, setting)
    return Dataset.from_list(records, features=QA_FEATURES)


def _read_items(path: str, setting: str) -> list:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{setting} {path} does not exist", f"check the path in {setting}")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{setting} {path} is not valid JSON ({error})", "fix the file") from None
    if isinstance(content, dict) and isinstance(content.get("data"), list):
        return content["data"]
    if isinstance(content, list):
        return content
    raise UserError(f"{setting} {path} has no top-level \"data\" list", "use the SQuAD layout {\"data\": [...]}")


def _require(record: dict, keys: tuple[str, ...], where: str, setting: str) -> None:
    missing = [key for key in keys if key not in record]
    if missing:
        raise UserError(
            f"{setting}: {where} lacks {', '.join(missing)} (has {', '.join(record) or 'nothing'})",
            "use the SQuAD layout",
        )


def _from_article(article: dict, path: str, setting: str) -> list[dict]:
    records = []
    for paragraph in article["paragraphs"]:
        _require(paragraph, ("context", "qas"), f"a paragraph in {path}", setting)
        for qa in paragraph["qas"]:
            _require(qa, ("id", "question"), f"a question in {path}", setting)
            answers = [] if qa.get("is_impossible") else qa.get("answers", [])
            for answer in answers:
                _require(answer, ("text", "answer_start"), f"an answer of question {qa['id']}", setting)
            records.append(
                {
                    "id": str(qa["id"]),
                    "title": str(article.get("title", "")),
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {
                        "text": [a["text"] for a in answers],
                        "answer_start": [int(a["answer_start"]) for a in answers],
                    },
                }
            )
    return records


def _from_flat(record: dict, path: str, setting: str) -> dict:
    _require(record, ("id", "context", "question"), f"a record in {path}", setting)
    answers = record.get("answers") or {"text": [], "answer_start": []}
    if not isinstance(answers, dict) or set(answers) != {"text", "answer_start"}:
        raise UserError(
            f"{setting}: answers of {record['id']} must be {{\"text\": [...], \"answer_start\": [...]}}",
            "use the flat Hugging Face squad layout",
        )
    return {
        "id": str(record["id"]),
        "title": str(record.get("title", "")),
        "context": record["context"],
        "question": record["question"],
        "answers": {"text": list(answers["text"]), "answer_start": [int(s) for s in answers["answer_start"]]},
    }


def _check(records: list[dict], path: str, setting: str) -> None:
    seen: set[str] = set()
    for record in records:
        qid = record["id"]
        if qid in seen:
            raise UserError(f"{setting} {path}: question id {qid} appears twice", "ids must be unique")
        seen.add(qid)
        answers = record["answers"]
        if len(answers["text"]) != len(answers["answer_start"]):
            raise UserError(f"{setting} {path}: question {qid} has unequal answer text/answer_start lists", "fix it")
        for text, start in zip(answers["text"], answers["answer_start"]):
            if record["context"][start : start + len(text)] != text:
                raise UserError(
                    f"{setting} {path}: answer {text!r} of question {qid} "
                    f"is not at answer_start {start} of its context",
                    "fix answer_start (a character offset into context)",
                )
