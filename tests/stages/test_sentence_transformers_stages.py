"""A sentence-transformers directory through prune, transfer and `export --format hf`: each output is a
sentence-transformers directory again, with the input's pooling, whose embeddings are its own sparse
transformer's."""

import pytest
import torch

import pruneofa.runtime as rt
from pruneofa.cli import main
from pruneofa.modeldir import inspect_dir, read_pooling
from tests.conftest import tiny_overrides
from tests.stages.test_task_stages import args, classification_rows, csv_task, write_csv

SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer  # the [st] extra, installed by make setup

SENTENCES = ["the model prunes weights", "a teacher distills its knowledge", "music history"]
PRUNE = {"pruning.target_sparsity": 0.75, "pruning.target_step": 4, "pruning.stop_step": 4, "pruning.frequency": 2}


def embeddings_agree(model_dir):
    """SentenceTransformer's embeddings of `model_dir` against pruneofa's encode of the same checkpoint
    (transformers' forward, the directory's pooling)."""
    st = SentenceTransformer(str(model_dir), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    ours = rt.load(model_dir, engine="torch").encode(SENTENCES)
    torch.testing.assert_close(st, ours, atol=1e-5, rtol=1e-4)
    return st


@pytest.mark.slow
def test_prune_transfer_and_export_keep_a_sentence_transformers_model(tiny_sentence_transformers, corpus_file,
                                                                      tmp_path):
    pruned, transferred, exported = tmp_path / "pruned", tmp_path / "transferred", tmp_path / "exported"
    assert main(["prune", *tiny_overrides(tiny_sentence_transformers, corpus_file, pruned, **PRUNE)]) == 0
    data = {"train": write_csv(tmp_path / "train.csv", classification_rows(0, 16)),
            "validation": write_csv(tmp_path / "val.csv", classification_rows(1, 8))}
    assert main(["transfer", *args(pruned, transferred, teacher=tmp_path / "absent", **csv_task(data),
                                   **{"distill.alpha_kd": 0, "train.max_steps": 2})]) == 0
    assert main(["export", str(transferred), "--format", "hf", "--output-dir", str(exported)]) == 0

    pooling = read_pooling(tiny_sentence_transformers)
    for out in (pruned, transferred, exported):
        assert read_pooling(out) == pooling
        encoder = {n: v for n, v in inspect_dir(out)["layers"].items() if ".encoder." in f".{n}"}
        assert len(encoder) == 12 and all(v == pytest.approx(0.75, abs=0.02) for v in encoder.values())
    embeddings = {out: embeddings_agree(out) for out in (pruned, transferred, exported)}
    torch.testing.assert_close(embeddings[exported], embeddings[transferred])
    assert not torch.allclose(embeddings[transferred], embeddings[pruned])  # transfer trained the encoder
    torch.testing.assert_close(embeddings[pruned].norm(dim=1), torch.ones(len(SENTENCES)))  # Normalize kept
