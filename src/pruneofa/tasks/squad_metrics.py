"""SQuAD exact match and token F1, reproducing the official v2.0 evaluation script.

Normalisation (official `normalize_answer`): lowercase → drop ASCII punctuation (`string.punctuation`
only; other Unicode punctuation is kept, as upstream) → replace the words a/an/the with a space →
collapse whitespace. Token F1 on normalised whitespace tokens, with the multiset overlap
`common = |pred ∩ gold|`:  P = common/|pred|, R = common/|gold|, F1 = 2PR/(P+R).

No-answer handling (v2): a prediction of "" means "no answer". If either side has no tokens,
EM = F1 = 1 when both are empty else 0. Gold answers that normalise to "" are dropped; a question
with no remaining gold answer is scored against [""]. Each question takes the max over its golds.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)  # no-answer agreement scores 1, otherwise 0
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def usable_golds(golds: Sequence[str]) -> list[str]:
    """Golds that survive normalisation; [""] (= no answer) if none does."""
    kept = [g for g in golds if normalize_answer(g)]
    return kept or [""]


def squad_metrics(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """EM and F1 in percent over every question in `references` (a missing prediction is an error).

    Also reports HasAns_/NoAns_ exact_match, f1 and counts when the references contain both kinds
    of question (SQuAD v2), as the official script does.
    """
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[:3]}")
    if not references:
        raise ValueError("cannot score an empty set of questions")
    em, f1, has_answer = {}, {}, {}
    for qid, golds in references.items():
        golds = usable_golds(list(golds))
        has_answer[qid] = golds != [""]
        em[qid] = max(exact_match(predictions[qid], g) for g in golds)
        f1[qid] = max(token_f1(predictions[qid], g) for g in golds)

    def percent(scores: dict[str, float], ids: list[str]) -> float:
        return 100.0 * sum(scores[i] for i in ids) / len(ids)

    all_ids = list(references)
    result = {"exact_match": percent(em, all_ids), "f1": percent(f1, all_ids)}
    with_answer = [i for i in all_ids if has_answer[i]]
    without_answer = [i for i in all_ids if not has_answer[i]]
    if without_answer:
        for prefix, ids in (("HasAns", with_answer), ("NoAns", without_answer)):
            result[f"{prefix}_total"] = float(len(ids))
            if ids:
                result[f"{prefix}_exact_match"] = percent(em, ids)
                result[f"{prefix}_f1"] = percent(f1, ids)
    return result
