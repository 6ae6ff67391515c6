"""`RuntimeModel.encode`: sentence embeddings pooled as the model directory says, on every engine."""

import pytest
import torch
import transformers

import pruneofa.runtime as rt
from pruneofa import Pruner
from pruneofa.export import save_compressed
from pruneofa.modeldir import SentencePooling, copy_sentence_transformers_files
from pruneofa.runtime.encode import pool
from pruneofa.runtime.build import kernels_available
from tests.conftest import make_sentence_transformers_dir

SENTENCES = ["the model prunes weights", "a teacher distills its knowledge into the student network on text",
             "music"]


def reference(model_dir, pooling: SentencePooling, sentences=SENTENCES) -> torch.Tensor:
    """transformers' forward, then the pooling written out one sentence at a time."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    rows = []
    for sentence in sentences:
        with torch.no_grad():
            hidden = model(**tokenizer(sentence, return_tensors="pt")).last_hidden_state[0]
        row = {"mean": hidden.mean(0), "cls": hidden[0], "max": hidden.max(0).values}[pooling.mode]
        rows.append(row / row.norm() if pooling.normalize else row)
    return torch.stack(rows)


def test_pool_ignores_padding_in_every_mode():
    hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]])  # right and left padding
    for mode in ("mean", "cls", "max"):
        for normalize in (False, True):
            pooled = pool(hidden, mask, SentencePooling(mode, normalize))
            for i in range(2):
                tokens = hidden[i][mask[i].bool()]
                row = {"mean": tokens.mean(0), "cls": tokens[0], "max": tokens.max(0).values}[mode]
                torch.testing.assert_close(pooled[i], row / row.norm() if normalize else row)


@pytest.mark.parametrize("mode", ["mean", "cls"])
def test_encode_pools_as_the_directory_says_in_batches_of_any_size(mode, tiny_models, tmp_path):
    st_dir = make_sentence_transformers_dir(tiny_models["bert-headless"], tmp_path / "st",
                                            {"embedding_dimension": 32, "pooling_mode": mode})
    expected = reference(st_dir, SentencePooling(mode, normalize=True))
    model = rt.load(st_dir, engine="torch")
    torch.testing.assert_close(model.encode(SENTENCES), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.encode(SENTENCES, batch_size=2), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.encode(SENTENCES[1]), expected[1], atol=1e-5, rtol=1e-4)


def test_a_plain_directory_pools_by_the_mean_unnormalized_and_an_lm_head_is_not_run(tiny_models):
    expected = reference(tiny_models["bert"], SentencePooling("mean", normalize=False))
    embeddings = rt.load(tiny_models["bert"], engine="torch").encode(SENTENCES)  # a BertForMaskedLM dir
    assert embeddings.shape == (len(SENTENCES), 32)
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=1e-4)


def test_a_model_object_needs_its_tokenizer(tiny_models, tokenizer):
    model = rt.load(transformers.AutoModel.from_pretrained(tiny_models["bert-headless"]), engine="torch")
    with pytest.raises(ValueError, match="tokenizer="):
        model.encode(SENTENCES)
    pooling = SentencePooling("cls", normalize=True)
    torch.testing.assert_close(model.encode(SENTENCES, tokenizer=tokenizer, pooling=pooling),
                               reference(tiny_models["bert-headless"], pooling), atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not kernels_available(), reason="the sparse C++ kernels did not build (no g++)")
def test_sparse_int8_encodes_a_compressed_sentence_transformers_dir_like_fp32(tiny_sentence_transformers, tmp_path):
    model = transformers.AutoModel.from_pretrained(tiny_sentence_transformers)
    Pruner(model, method="oneshot", target_sparsity=0.9, start_step=0).finalize()
    model.save_pretrained(tmp_path / "sparse")
    transformers.AutoTokenizer.from_pretrained(tiny_sentence_transformers).save_pretrained(tmp_path / "sparse")
    copy_sentence_transformers_files(tiny_sentence_transformers, tmp_path / "sparse")
    compressed = save_compressed(tmp_path / "sparse", tmp_path / "int8", "int8").parent
    runtime = rt.load(compressed, engine="sparse-int8", threads=1)
    assert runtime.sentence_encoder is None and "sparse-int8" in runtime.report.summary()
    embeddings = runtime.encode(SENTENCES)
    assert runtime.sentence_encoder.fast_path is not None  # the encoder ran in one native call
    expected = reference(tmp_path / "sparse", SentencePooling("mean", normalize=True))
    cosine = torch.nn.functional.cosine_similarity(embeddings, expected)
    assert embeddings.norm(dim=1).sub(1).abs().max() < 1e-5
    assert cosine.min() > 0.99
