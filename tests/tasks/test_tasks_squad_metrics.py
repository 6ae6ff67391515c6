"""SQuAD normalisation and scoring, checked against the official script's rules by hand."""

import pytest

from pruneofa.tasks.squad_metrics import exact_match, normalize_answer, squad_metrics, token_f1


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("The  Cat!", "cat"),  # lowercase, punctuation, article, whitespace
        ("an apple, a pear and THE plum.", "apple pear and plum"),
        ("theatre anthem", "theatre anthem"),  # articles only as whole words
        ("A.B.C.", "abc"),  # punctuation removed before articles: "a.b.c." → "abc", not an article
        ("U.S. a", "us"),
        ("  \t\nspaced \n out  ", "spaced out"),
        ("Éclair Über", "éclair über"),  # Unicode letters lowercased and kept
        # only ASCII punctuation goes; the article between curly quotes still goes
        ("“the” — end", "“ ” — end"),
        ("", ""),
        ("the a an", ""),
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_token_f1_by_hand():
    # pred tokens (cat, sat, on, mat), gold (cat, on, mat): common 3 → P = 3/4, R = 1
    assert token_f1("The cat sat on the mat", "a cat on a mat") == pytest.approx(2 * 0.75 * 1 / 1.75)
    # multiset overlap: pred (x, x, y), gold (x, y, y) → common = min(2,1) + min(1,2) = 2; P = R = 2/3
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0


def test_empty_answers():
    assert token_f1("", "") == 1.0 and exact_match("", "") == 1
    assert token_f1("", "Paris") == 0.0 and token_f1("Paris", "") == 0.0
    assert token_f1("The.", "") == 1.0  # normalises to nothing, i.e. no answer


def test_max_over_golds_and_percent():
    refs = {"q1": ["Broncos", "Denver Broncos!"], "q2": ["big red dog", "dog"], "q3": ["Paris"]}
    preds = {"q1": "denver broncos", "q2": "red dog", "q3": "London"}
    # q1: EM 1 (second gold), F1 1.
    # q2: EM 0; F1 vs "big red dog" = 2·1·(2/3)/(1+2/3) = 0.8, vs "dog" = 2·0.5·1/1.5 = 2/3 → max 0.8
    result = squad_metrics(preds, refs)
    assert result["exact_match"] == pytest.approx(100 * 1 / 3)
    assert result["f1"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)
    assert "HasAns_total" not in result  # v1-style data: no breakdown


def test_v2_no_answer_handling():
    refs = {"has": ["Paris"], "none": [], "only_article": ["the"], "missed": ["Rome"]}
    preds = {"has": "paris.", "none": "", "only_article": "something", "missed": ""}
    # "only_article" has no gold left after normalisation → no-answer question, so "something" scores 0
    result = squad_metrics(preds, refs)
    assert result["exact_match"] == pytest.approx(100 * (1 + 1 + 0 + 0) / 4)
    assert result["HasAns_total"] == 2 and result["NoAns_total"] == 2
    assert result["HasAns_exact_match"] == pytest.approx(50.0)
    assert result["NoAns_exact_match"] == pytest.approx(50.0)


def test_missing_prediction_is_an_error():
    with pytest.raises(ValueError, match="no prediction"):
        squad_metrics({}, {"q": ["x"]})
