"""Wiki pairs: sentence splitting, balanced deterministic pairs drawn per article split, negatives
that length cannot give away, the CSV files and their trip through `pruneofa finetune`."""

import csv
import json

import pytest

from pruneofa.cli import main as pruneofa_main
from pruneofa.tasks.wiki_pairs import (
    COLUMNS,
    build_wiki_pairs,
    load_articles,
    main,
    split_sentences,
    write_wiki_pairs,
)
from tests.conftest import SEQ
from tests.tasks.summaries import make_articles, write_summaries

SIZES = {"train": 120, "validation": 30, "test": 30}


@pytest.fixture(scope="module")
def articles():
    return make_articles(200, seed=5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, articles):
    return str(write_summaries(tmp_path_factory.mktemp("wiki-pairs") / "summaries.json", articles))


@pytest.mark.parametrize("text, sentences", [
    ("The Catcher in the Rye is a novel by J. D. Salinger. It was published in 1951.",
     ["The Catcher in the Rye is a novel by J. D. Salinger.", "It was published in 1951."]),
    ("Born in St. Louis, Mr. Smith joined the U.S. Army in 1917. He served  two years!  \"Then\" he left (c. 1920).",
     ["Born in St. Louis, Mr. Smith joined the U.S. Army in 1917.", "He served two years!",
      "\"Then\" he left (c. 1920)."]),
    ("Amazon.com, Inc. is a company. Version 2.5 shipped. 3 stores opened.",
     ["Amazon.com, Inc. is a company.", "Version 2.5 shipped.", "3 stores opened."]),
    ("no break here", ["no break here"]),
])
def test_sentences_break_at_ends_and_not_at_abbreviations_or_initials(text, sentences):
    assert split_sentences(text) == sentences
    assert " ".join(split_sentences(text)) == " ".join(text.split())  # nothing is lost or reordered


def test_the_generated_corpus_splits_back_into_its_sentences(articles, corpus):
    expected = [s for s in articles.values() if len(s) >= 2]
    assert load_articles(corpus) == expected


def test_pairs_are_deterministic_balanced_and_split_by_article(articles, corpus):
    splits = build_wiki_pairs(3, SIZES, corpus)
    assert splits == build_wiki_pairs(3, SIZES, corpus)  # same seed, same pairs
    assert splits != build_wiki_pairs(4, SIZES, corpus)
    article_of = {s: title for title, sentences in articles.items() for s in sentences}  # all sentences are unique
    used = {}
    for split, rows in splits.items():
        assert len(rows) == SIZES[split] and sum(r["label"] for r in rows) == SIZES[split] // 2
        for r in rows:
            a, b = article_of[r["sentence1"]], article_of[r["sentence2"]]
            assert r["sentence1"] != r["sentence2"] and (a == b) == (r["label"] == 1)
        used[split] = {article_of[r[c]] for r in rows for c in ("sentence1", "sentence2")}
        assert len({tuple(sorted((r["sentence1"], r["sentence2"]))) for r in rows}) == len(rows)  # no pair twice
    assert not used["train"] & used["validation"] and not used["train"] & used["test"]
    assert not used["validation"] & used["test"]


def best_threshold_accuracy(values, labels):
    """The accuracy of the best rule "label = [value > t]" or its opposite, over every cut between distinct values."""
    pairs, positives = sorted(zip(values, labels)), sum(labels)
    best, below_positives = max(positives, len(labels) - positives) / len(labels), 0
    for i, (value, label) in enumerate(pairs):
        below_positives += label
        if i + 1 < len(pairs) and pairs[i + 1][0] == value:
            continue  # a cut must not separate equal values
        correct = (i + 1 - below_positives) + (positives - below_positives)
        best = max(best, correct / len(labels), 1 - correct / len(labels))
    return best


def test_length_does_not_give_the_label_away_on_the_real_summaries():
    rows = build_wiki_pairs(0, {"train": 3000, "validation": 2, "test": 2})["train"]
    labels = [r["label"] for r in rows]
    one, two = [len(r["sentence1"]) for r in rows], [len(r["sentence2"]) for r in rows]
    for name, values in {"len(sentence2)": two, "|len1 - len2|": [abs(a - b) for a, b in zip(one, two)],
                         "len1 + len2": [a + b for a, b in zip(one, two)], "len1 / len2": [a / b for a, b in zip(one, two)],
                         "words(sentence2)": [len(r["sentence2"].split()) for r in rows]}.items():
        assert best_threshold_accuracy(values, labels) < 0.56, name
    # the task is learnable: shared words are real evidence of a shared article
    overlap = [len(set(r["sentence1"].lower().split()) & set(r["sentence2"].lower().split())) for r in rows]
    assert best_threshold_accuracy(overlap, labels) > 0.6


def test_files_are_written_as_csv_with_the_task_columns(corpus, tmp_path):
    paths = write_wiki_pairs(tmp_path / "out", 1, SIZES, corpus)
    splits = build_wiki_pairs(1, SIZES, corpus)
    for split, path in paths.items():
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            assert tuple(reader.fieldnames) == COLUMNS
            assert [{**r, "label": int(r["label"])} for r in reader] == splits[split]
    info = json.loads((tmp_path / "out" / "wiki_pairs.json").read_text())
    assert info["seed"] == 1 and info["splits"]["validation"] == {"pairs": 30, "positives": 15}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test.csv", "train.csv", "validation.csv",
                                                                     "wiki_pairs.json"]  # no temporary file left


def test_command_line_writes_the_files_and_refuses_bad_sizes_in_one_line(corpus, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([str(out), "--seed", "2", "--train", "40", "--validation", "10", "--test", "10", "--corpus", corpus]) == 0
    assert "pruneofa finetune data.task=csv" in capsys.readouterr().out
    assert sum(1 for _ in open(out / "train.csv")) == 41
    assert main([str(tmp_path / "odd"), "--train", "41", "--corpus", corpus]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "even" in err
    assert main([str(tmp_path / "big"), "--train", "100000", "--corpus", corpus]) == 2
    assert "distinct pairs" in capsys.readouterr().err and not (tmp_path / "big" / "train.csv").exists()


@pytest.mark.slow
def test_the_csv_files_train_through_pruneofa_finetune(tiny_models, corpus, tmp_path):
    paths = write_wiki_pairs(tmp_path / "data", 0, SIZES, corpus)
    out = tmp_path / "ft"
    args = ["finetune", f"model={tiny_models['bert']}", f"output_dir={out}", "data.task=csv",
            *[f"data.{split}_file={path}" for split, path in paths.items()], "data.text_columns=[sentence1,sentence2]",
            f"data.max_seq_len={SEQ}", "train.max_steps=2", "train.batch_size=8", "train.warmup_steps=0",
            "train.save_every=0", "train.eval_every=0", "train.log_every=1"]
    assert pruneofa_main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2 and 0.0 <= metrics["test/accuracy"] <= 1.0 and "validation/accuracy" in metrics
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "0", "1": "1"}
