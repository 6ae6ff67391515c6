"""The target of issue #14 on the offline all-MiniLM-L6-v2 (a sentence-transformers directory): pruned to
90% with masks, written and exported by pruneofa, `SentenceTransformer(export).encode` gives the masked
model's embeddings."""

import pytest
import torch
import transformers

from pruneofa import Pruner
from pruneofa.data.assets import asset_path
from pruneofa.export import export_hf
from pruneofa.modeldir import copy_sentence_transformers_files, inspect_dir, read_pooling
from pruneofa.runtime.encode import pool
from pruneofa.stages.export_cmd import run_export

SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer  # the [st] extra, installed by make setup

SENTENCES = ["A man is playing a guitar on the street while people walk by.", "Sparse models keep their accuracy.",
             "What time does the train to Amsterdam leave tomorrow morning?"]


def test_sentence_transformers_loads_the_sparse_export_with_the_masked_models_embeddings(tmp_path):
    minilm = asset_path("offline/minilm-l6")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm)
    model = transformers.AutoModel.from_pretrained(minilm).eval()
    Pruner(model, method="oneshot", target_sparsity=0.9, start_step=0)  # masks attached, not folded: the masked model
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        masked = pool(model(**batch).last_hidden_state, batch["attention_mask"], read_pooling(minilm))

    written = export_hf(model, tmp_path / "written", tokenizer)  # the model dir a stage writes:
    copy_sentence_transformers_files(minilm, written)             # weights, tokenizer, the sentence files
    exported = run_export(str(written), "hf", str(tmp_path / "hf"))  # `pruneofa export --format hf`

    assert inspect_dir(exported)["overall"] == pytest.approx(0.9, abs=0.005)
    embeddings = SentenceTransformer(str(exported), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(embeddings, masked)
    assert cosine.min() >= 0.9999
    torch.testing.assert_close(embeddings, masked, atol=1e-5, rtol=1e-4)
