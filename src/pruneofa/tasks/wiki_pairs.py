"""Wiki pairs: a generated sentence-pair task from the offline Wikipedia summaries, so the transfer
study has a second local task beside Rotten Tomatoes.

"Do these two sentences come from the same Wikipedia summary?"
    label 1: two different sentences of one summary;
    label 0: a sentence of one summary and a sentence of another.

Each split is balanced (half of each label) and drawn from its own articles: the articles are
shuffled once and cut in proportion to the split sizes, so no article has sentences in two splits.
A negative starts as a positive would, (article a, sentences i != j), then swaps sentence j for the
sentence at the same position j of one of 16 other articles, the one closest in length to the
replaced sentence: both labels then share the distribution of sentence1, of sentence2's length and
of its position (first sentences, "X is a ...", are distinctive), so length alone cannot tell them apart.
Everything is drawn from random.Random seeded by --seed (each split by its own seed), so a seed
always writes the same files.

    python -m pruneofa.tasks.wiki_pairs OUTPUT_DIR [--seed 0] [--train 8000] [--validation 1000] [--test 1000]
    pruneofa finetune data.task=csv data.train_file=OUTPUT_DIR/train.csv data.validation_file=OUTPUT_DIR/validation.csv \\
        data.test_file=OUTPUT_DIR/test.csv data.text_columns=[sentence1,sentence2] output_dir=...
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import re
import sys
from pathlib import Path

from pruneofa.data.summaries import read_titled_summaries
from pruneofa.errors import UserError
from pruneofa.fileio import atomic_write_text

COLUMNS = ("sentence1", "sentence2", "label")
DEFAULT_SIZES = {"train": 8000, "validation": 1000, "test": 1000}
MIN_WORDS = 4  # shorter pieces are list items, headings or splitter mistakes, not sentences
LENGTH_CANDIDATES = 16  # other articles looked at for a negative's length-matched sentence
MAX_MISSES = 20_000  # draws in a row that add no new pair: the split's articles have no more to give
# words before a period that do not end a sentence (lower case, without their final period)
ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr vs etc no nos vol co inc ltd corp mt ft gen col lt sgt capt "
                          "rev fr hon approx ca c cf al fig op".split())
# . ! or ? (then closing quotes or brackets), whitespace, then what can open a sentence
BOUNDARY = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # U.S, e.g, i.e: the final period is the one matched


def _ends_with_abbreviation(piece: str) -> bool:
    word = (piece.rsplit(None, 1) or [""])[-1].lstrip("\"'([\u201c\u2018")
    return (len(word) == 1 and word.isupper()) or word.lower() in ABBREVIATIONS or bool(DOTTED.fullmatch(word))


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, whitespace collapsed. A break follows . ! or ? and whitespace before a
    capital, digit or opening quote; after a period, not when the word before it is an abbreviation
    or an initial ("J. D. Salinger", "St. Louis", "U.S. Army"): a missed break only joins two
    sentences, a wrong one would cut one in half."""
    text = " ".join(text.split())
    sentences, start = [], 0
    for match in BOUNDARY.finditer(text):
        if text[match.start()] == "." and _ends_with_abbreviation(text[start:match.start()]):
            continue
        sentences.append(text[start:match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def load_articles(corpus: str = "offline/wiki-summaries") -> list[list[str]]:
    """The sentences (of at least MIN_WORDS words) of every summary that has two or more, in file order."""
    articles = []
    for _, text in read_titled_summaries(corpus, "--corpus"):
        sentences = list(dict.fromkeys(s for s in split_sentences(text) if len(s.split()) >= MIN_WORDS))
        if len(sentences) >= 2:
            articles.append(sentences)
    return articles


def split_articles(articles: list[list[str]], sizes: dict[str, int], seed: int) -> dict[str, list[list[str]]]:
    """Disjoint article sets, one per split, their sizes in proportion to the pairs asked of each."""
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    total, start, parts = sum(sizes.values()), 0, {}
    for n, (split, pairs) in enumerate(sizes.items()):
        stop = len(order) if n == len(sizes) - 1 else start + round(len(order) * pairs / total)
        parts[split] = [articles[i] for i in order[start:stop]]
        start = stop
    return parts


def make_pairs(articles: list[list[str]], n_pairs: int, rng: random.Random, split: str = "split") -> list[dict]:
    """n_pairs / 2 positives and as many negatives (see the module docstring), no (sentence1, sentence2)
    twice, shuffled."""
    if len(articles) < 2:
        raise UserError(f"the {split} split got {len(articles)} article(s); it needs at least 2",
                        "ask for more pairs in that split or use a larger corpus")
    rows, seen, want, misses = [], set(), {1: n_pairs // 2, 0: n_pairs // 2}, 0
    while (want[0] or want[1]) and misses < MAX_MISSES:
        label = 1 if want[1] >= want[0] else 0
        misses += 1
        a = rng.randrange(len(articles))
        i, j = rng.sample(range(len(articles[a])), 2)
        first, second = articles[a][i], articles[a][j]
        if label == 0:
            others = (articles[b] for b in (rng.randrange(len(articles)) for _ in range(LENGTH_CANDIDATES)) if b != a)
            candidates = [o[j] if j < len(o) else o[rng.randrange(len(o))] for o in others]
            if not candidates:
                continue
            second = min(candidates, key=lambda s: abs(len(s) - len(articles[a][j])))
            if second in articles[a]:  # a sentence two summaries share would make this "negative" a positive
                continue
        key = (min(first, second), max(first, second))  # a pair and its swap are one example
        if first == second or key in seen:
            continue
        seen.add(key)
        rows.append({"sentence1": first, "sentence2": second, "label": label})
        want[label], misses = want[label] - 1, 0
    if want[0] or want[1]:
        raise UserError(f"only {len(rows)} distinct pairs of {n_pairs} could be drawn from the {len(articles)} "
                        f"articles of the {split} split", "ask for fewer pairs or use a larger corpus")
    rng.shuffle(rows)
    return rows


def build_wiki_pairs(seed: int = 0, sizes: dict[str, int] | None = None,
                     corpus: str = "offline/wiki-summaries") -> dict[str, list[dict]]:
    """{split: rows}, every row {"sentence1", "sentence2", "label"}; the same for the same arguments."""
    sizes = dict(sizes or DEFAULT_SIZES)
    bad = {split: n for split, n in sizes.items() if n < 2 or n % 2}
    if bad:
        raise UserError(f"split sizes must be even and at least 2 (half positive, half negative), got {bad}",
                        "pass even sizes, e.g. --train 8000 --validation 1000 --test 1000")
    parts = split_articles(load_articles(corpus), sizes, seed)
    # each split draws from its own seeded stream: resizing one split leaves the others' draws alone
    return {split: make_pairs(parts[split], n, random.Random(f"wiki-pairs:{seed}:{split}"), split)
            for split, n in sizes.items()}


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_wiki_pairs(output_dir: str | Path, seed: int = 0, sizes: dict[str, int] | None = None,
                     corpus: str = "offline/wiki-summaries") -> dict[str, Path]:
    """Write OUTPUT_DIR/{train,validation,test}.csv (each atomically) and wiki_pairs.json (how they were made)."""
    splits = build_wiki_pairs(seed, sizes, corpus)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {split: out / f"{split}.csv" for split in splits}
    for split, rows in splits.items():
        atomic_write_text(paths[split], to_csv(rows))
    counts = {split: {"pairs": len(rows), "positives": sum(r["label"] for r in rows)} for split, rows in splits.items()}
    atomic_write_text(out / "wiki_pairs.json", json.dumps({"seed": seed, "corpus": corpus, "splits": counts}, indent=1))
    return paths


def finetune_command(paths: dict[str, Path]) -> str:
    files = " ".join(f"data.{split}_file={path}" for split, path in paths.items())
    return f"pruneofa finetune data.task=csv {files} data.text_columns=[sentence1,sentence2] output_dir=..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pruneofa.tasks.wiki_pairs", description=__doc__.split("\n\n")[1])
    parser.add_argument("output_dir")
    parser.add_argument("--seed", type=int, default=0, help="which articles and pairs (default: 0)")
    for split, n in DEFAULT_SIZES.items():
        parser.add_argument(f"--{split}", type=int, default=n, help=f"pairs in {split}.csv (even; default: {n})")
    parser.add_argument("--corpus", default="offline/wiki-summaries", help="offline/wiki-summaries or a JSON like it")
    ns = parser.parse_args(argv)
    try:
        paths = write_wiki_pairs(ns.output_dir, ns.seed, {s: getattr(ns, s) for s in DEFAULT_SIZES}, ns.corpus)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print("\n".join(f"wiki_pairs: wrote {path}" for path in paths.values()))
    print(f"train on it: {finetune_command(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
