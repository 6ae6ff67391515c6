"""A small generated corpus in the layout of offline/wiki-summaries: {key: {"title", "extract"}}."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("river music painter city war science opera film novel king church island bridge poet theory law "
         "empire mountain planet language school market engine temple festival garden battle").split()


def make_articles(n: int, seed: int = 0) -> dict[str, list[str]]:
    """title -> sentences; every sentence is unique (it carries its article and position as numbers)."""
    rng = random.Random(seed)
    articles = {}
    for a in range(n):
        title = f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} {a}"
        sentences = []
        for s in range(rng.randint(1, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 24))]
            subject = title if s == 0 else rng.choice(["It", "The " + title.split()[0].lower(), "This"])
            sentences.append(f"{subject} {' '.join(words)} {a}x{s}.")
        articles[title] = sentences
    return articles


def write_summaries(path: Path, articles: dict[str, list[str]]) -> Path:
    entries = {title: {"title": title, "extract": " ".join(sentences), "topic": "test"}
               for title, sentences in articles.items()}
    path.write_text(json.dumps(entries))
    return path
