"""sentence-transformers directories: their pooling read, their files carried into every export."""

import json
import shutil

import pytest

from pruneofa.data.assets import asset_path
from pruneofa.errors import UserError
from pruneofa.export import decompress_to_hf, export_hf, save_compressed
from pruneofa.modeldir import SentencePooling, is_sentence_transformers_dir, read_pooling
from tests.conftest import SEQ, make_sentence_transformers_dir

ST_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json")


def test_the_offline_minilm_is_read_as_published_mean_pooling_then_normalize():
    # published before sentence-transformers 3: one pooling_mode_*_token flag per mode, no 2_Normalize folder
    minilm = asset_path("offline/minilm-l6")
    assert not (minilm / "2_Normalize").exists()
    assert read_pooling(minilm) == SentencePooling("mean", normalize=True, max_seq_length=256)


@pytest.mark.parametrize("pooling, mode", [
    ({"embedding_dimension": 32, "pooling_mode": "cls"}, "cls"),
    ({"embedding_dimension": 32, "pooling_mode": ["max"]}, "max"),
    ({"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_max_tokens": True}, "max"),
])
def test_pooling_is_read_in_both_formats(pooling, mode, tiny_models, tmp_path):
    st_dir = make_sentence_transformers_dir(tiny_models["bert-headless"], tmp_path / "st", pooling, normalize=False)
    assert read_pooling(st_dir) == SentencePooling(mode, normalize=False, max_seq_length=SEQ)


def test_pipelines_the_runtime_cannot_serve_are_refused_with_the_fix(tiny_sentence_transformers, tiny_models, tmp_path):
    weighted = make_sentence_transformers_dir(tiny_models["bert-headless"], tmp_path / "weighted",
                                              {"embedding_dimension": 32, "pooling_mode": "weightedmean"})
    with pytest.raises(UserError, match="pooling 'weightedmean'"):
        read_pooling(weighted)
    dense = tmp_path / "dense"
    shutil.copytree(tiny_sentence_transformers, dense)
    modules = json.loads((dense / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UserError, match="module Dense") as err:
        read_pooling(dense)
    assert "SentenceTransformer(dir).encode" in err.value.fix
    nested = tmp_path / "nested"
    shutil.copytree(tiny_sentence_transformers, nested)
    modules = json.loads((nested / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (nested / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UserError, match="not a Transformer at the top"):
        read_pooling(nested)


def test_exports_of_a_sentence_transformers_dir_are_ones_again_with_the_same_files(tiny_sentence_transformers,
                                                                                     tiny_models, tmp_path):
    hf = export_hf(tiny_sentence_transformers, tmp_path / "hf")
    compressed = save_compressed(tiny_sentence_transformers, tmp_path / "compressed", "int8").parent
    back = decompress_to_hf(compressed, tmp_path / "back")
    for out in (hf, compressed, back):
        assert is_sentence_transformers_dir(out)
        for name in ST_FILES:
            assert (out / name).read_bytes() == (tiny_sentence_transformers / name).read_bytes()
        assert (out / "2_Normalize").is_dir()
        assert read_pooling(out) == read_pooling(tiny_sentence_transformers)
    plain = export_hf(tiny_models["bert-headless"], tmp_path / "plain")
    assert not is_sentence_transformers_dir(plain) and not (plain / "1_Pooling").exists()


def test_onnx_and_compact_exports_carry_the_pooling_and_embed_as_the_source(tiny_sentence_transformers, tmp_path):
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModel

    from pruneofa.runtime.encode import pool
    from pruneofa.stages.export_cmd import run_export

    onnx_file = run_export(str(tiny_sentence_transformers), "onnx", str(tmp_path / "onnx"))
    compact = run_export(str(tiny_sentence_transformers), "hf", str(tmp_path / "compact"), compact=True)
    pooling = read_pooling(tiny_sentence_transformers)
    ids = torch.randint(5, 90, (2, SEQ))
    mask = torch.ones_like(ids)
    mask[1, SEQ // 2:] = 0
    with torch.no_grad():
        expected = pool(AutoModel.from_pretrained(tiny_sentence_transformers)(input_ids=ids, attention_mask=mask)
                        .last_hidden_state, mask, pooling)
        compacted = AutoModel.from_pretrained(compact, trust_remote_code=True)(input_ids=ids, attention_mask=mask)
    session = ort.InferenceSession(str(onnx_file))
    feeds = {i.name: {"input_ids": ids, "attention_mask": mask}.get(i.name, torch.zeros_like(ids)).numpy()
             for i in session.get_inputs()}
    from_onnx = torch.from_numpy(np.asarray(session.run(None, feeds)[0]))
    for out, hidden in ((onnx_file.parent, from_onnx), (compact, compacted.last_hidden_state)):
        assert is_sentence_transformers_dir(out) and read_pooling(out) == pooling
        for name in ST_FILES:
            assert (out / name).read_bytes() == (tiny_sentence_transformers / name).read_bytes()
        torch.testing.assert_close(pool(hidden, mask, read_pooling(out)), expected, atol=1e-5, rtol=1e-4)
