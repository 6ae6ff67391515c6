"""Title -> summary retrieval: the held-out split, mean pooling, the recall formula and the pooling
settings, checked against hand computations on tiny random models."""

import json
import shutil

import numpy as np
import pytest
import torch

from pruneofa.modeldir import SentencePooling
from pruneofa.runtime.encode import pool
import transformers

from pruneofa.data.corpus import split_documents
from pruneofa.errors import UserError
from pruneofa.tasks.retrieval import (
    RetrievalConfig,
    embed,
    evaluate_retrieval,
    gold_ranks,
    held_out_pairs,
    load_encoder,
    pooling_of,
    recall_at,
)
from tests.conftest import SEQ
from tests.tasks.summaries import make_articles, write_summaries


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_summaries(tmp_path_factory.mktemp("retrieval") / "summaries.json", make_articles(150, seed=1))


def config(corpus, **extra):
    return RetrievalConfig(**{"files": [str(corpus)], "validation_fraction": 0.2, "max_seq_len": SEQ,
                              "batch_size": 4, **extra})


def test_held_out_pairs_are_the_lm_stages_split_with_their_titles(corpus):
    entries = json.loads(corpus.read_text())
    extracts = [e["extract"] for e in entries.values()]
    title_of = {e["extract"]: e["title"] for e in entries.values()}
    for seed in (0, 3):
        _, held = split_documents(extracts, 0.2, seed)
        assert held_out_pairs(config(corpus, split_seed=seed)) == [(title_of[text], text) for text in held]
    assert held_out_pairs(config(corpus, split_seed=0)) != held_out_pairs(config(corpus, split_seed=3))
    assert held_out_pairs(config(corpus, max_queries=7)) == held_out_pairs(config(corpus))[:7]


def test_mean_pooling_equals_a_hand_loop_and_ignores_padding():
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]])
    by_hand = torch.stack([sum(hidden[b, t] for t in range(6) if mask[b, t]) / int(mask[b].sum()) for b in range(3)])
    assert torch.allclose(pool(hidden, mask, SentencePooling()), by_hand, atol=1e-6)
    hidden[mask == 0] = 1e4  # whatever sits at padded positions changes nothing
    assert torch.allclose(pool(hidden, mask, SentencePooling()), by_hand, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_batched_embeddings_equal_one_text_at_a_time(tiny_models, tokenizer, family):
    model = load_encoder(str(tiny_models[family]))
    texts = ["a short one", "a much longer text about a river a city and a mountain with more words in it", "x"]
    batched = embed(model, tokenizer, texts, SEQ, batch_size=3)
    for i, text in enumerate(texts):  # no padding at all when a text is alone
        alone = embed(model, tokenizer, [text], SEQ, batch_size=1)
        assert torch.allclose(batched[i], alone[0], atol=1e-5)
    assert torch.allclose(batched.norm(dim=-1), torch.ones(3), atol=1e-5)


def hand_recall(model_dir, pairs, max_len):
    """{k: recall@k} the slow way: each text alone through transformers' model, the mean over its tokens,
    cosine by numpy, the gold's rank counting every other document scored at least as high."""
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()

    def vector(text):
        with torch.no_grad():
            ids = tok(text, truncation=True, max_length=max_len, return_tensors="pt")
            return model(**ids).last_hidden_state[0].mean(dim=0).numpy()

    q = np.stack([vector(title) for title, _ in pairs])
    d = np.stack([vector(text) for _, text in pairs])
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    ranks = [sum(1 for j in range(len(pairs)) if j != i and sims[i, j] >= sims[i, i]) for i in range(len(pairs))]
    return {k: sum(rank < k for rank in ranks) / len(pairs) for k in (1, 10)}


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_recall_matches_a_hand_computation_from_the_embeddings(tiny_models, corpus, family):
    cfg = config(corpus, max_seq_len=SEQ - 4)  # tiny RoBERTa has SEQ + 4 positions, 2 of them taken by its offset
    metrics = evaluate_retrieval(str(tiny_models[family]), cfg)
    pairs = held_out_pairs(cfg)
    assert metrics["n_queries"] == metrics["n_documents"] == len(pairs) == 30
    by_hand = hand_recall(tiny_models[family], pairs, SEQ - 4)
    assert 0 < by_hand[1] < 1  # a random tiny encoder: neither trivial nor hopeless, so the comparison means something
    for k in (1, 10):
        assert metrics[f"recall@{k}"] == pytest.approx(by_hand[k])
    assert metrics["kind"] == "retrieval" and metrics["sparsity"] == 0.0


def test_documents_identical_to_their_queries_are_all_found_first(tiny_models, tmp_path):
    titles = [f"{w} number {i}" for i, w in enumerate("river opera planet temple garden bridge poet king".split())]
    corpus = tmp_path / "same.json"
    corpus.write_text(json.dumps({t: {"title": t, "extract": t} for t in titles}))  # each summary is its title
    metrics = evaluate_retrieval(str(tiny_models["bert"]), config(corpus, validation_fraction=0.49))
    assert metrics["n_queries"] == 4 and metrics["recall@1"] == metrics["recall@10"] == 1.0


def test_ties_count_against_the_gold_so_a_constant_encoder_finds_nothing():
    queries = torch.randn(12, 5)
    assert gold_ranks(queries, queries.clone(), torch.arange(12)).tolist() == [0] * 12
    same = torch.ones(12, 5)
    ranks = gold_ranks(same, same, torch.arange(12))
    assert ranks.tolist() == [11] * 12 and recall_at(ranks) == {"recall@1": 0.0, "recall@10": 0.0}


def test_gold_ranks_count_the_documents_scored_above_the_gold():
    torch.manual_seed(1)
    q, d = torch.randn(9, 4), torch.randn(9, 4)
    gold = torch.randperm(9)
    cos = torch.nn.functional.cosine_similarity(q[:, None], d[None], dim=-1)
    by_hand = [int((cos[i] >= cos[i, gold[i]]).sum()) - 1 for i in range(9)]
    assert gold_ranks(q, d, gold, batch_size=4).tolist() == by_hand


def write_sentence_transformers_modules(directory, pooling, normalize):
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir()
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, **{f"pooling_mode_{m}": m.startswith(pooling + "_") for m in modes}}))


def test_pooling_follows_sentence_transformers_modules_and_the_recorded_source(tiny_models, tmp_path):
    assert pooling_of("offline/minilm-l6") == ("mean", True)  # all-MiniLM-L6-v2: Pooling(mean) + Normalize
    source = shutil.copytree(tiny_models["bert"], tmp_path / "source")
    assert pooling_of(str(source)) == ("mean", True)  # no modules.json anywhere: the default
    write_sentence_transformers_modules(source, "cls", normalize=False)
    assert pooling_of(str(source)) == ("cls", False)
    trained = shutil.copytree(tiny_models["bert"], tmp_path / "trained")  # a stage's output names its source
    (trained / "pruneofa.json").write_text(json.dumps({"stage": "teacher", "recipe": {"model": str(source)}}))
    assert pooling_of(str(trained)) == ("cls", False)
    cls = embed(load_encoder(str(trained)), transformers.AutoTokenizer.from_pretrained(trained), ["a b", "c"], SEQ, 2,
                "cls", False)
    model = transformers.AutoModel.from_pretrained(trained).eval()
    tok = transformers.AutoTokenizer.from_pretrained(trained)
    with torch.no_grad():
        assert torch.allclose(cls[1], model(**tok("c", return_tensors="pt")).last_hidden_state[0, 0], atol=1e-5)
    max_pooled = shutil.copytree(tiny_models["bert"], tmp_path / "max")
    write_sentence_transformers_modules(max_pooled, "max", normalize=True)
    with pytest.raises(UserError, match="pools by max"):
        pooling_of(str(max_pooled))


def test_a_qat_dir_is_refused_in_one_line(tiny_models, tmp_path):
    qat = shutil.copytree(tiny_models["bert"], tmp_path / "qat")
    (qat / "qat_state.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="QAT dir") as err:
        load_encoder(str(qat))
    assert "\n" not in str(err.value)


def test_a_task_model_is_scored_by_its_encoder_alone(tiny_models, tokenizer, tmp_path):
    classifier = transformers.BertForSequenceClassification.from_pretrained(tiny_models["bert"], num_labels=3)
    classifier.save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    encoder = load_encoder(str(tmp_path / "clf"))
    assert type(encoder) is transformers.BertModel  # the classifier head is dropped
    texts = ["a river in the city", "an opera", "the planet and its temple garden"]
    from_mlm = embed(load_encoder(str(tiny_models["bert"])), tokenizer, texts, SEQ, 2)
    assert torch.allclose(embed(encoder, tokenizer, texts, SEQ, 2), from_mlm, atol=1e-6)  # same encoder weights
