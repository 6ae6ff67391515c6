import json
import subprocess
import sys

import torch
from tests.export.helpers import batch
from safetensors.torch import load_file

from pruneofa.export import export_hf
from pruneofa.quantization import quantized_weights, save_qat
from pruneofa.quantization.checkpoint import plain_model_copy
from pruneofa.sparsity import masks as M

LOAD_WITH_TRANSFORMERS_ONLY = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification
model, info = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], output_loading_info=True)
inputs = json.loads(sys.argv[2])
with torch.no_grad():
    logits = model.eval()(**{k: torch.tensor(v) for k, v in inputs.items()}).logits
print(json.dumps({"logits": logits.tolist(), "info": {k: sorted(map(str, v)) for k, v in info.items()},
                  "pruneofa_loaded": any(m.startswith("pruneofa") for m in sys.modules)}))
"""


def test_qat_model_exports_as_plain_transformers_with_dequantized_weights(sparse_qat_bert, tmp_path):
    model, pruner = sparse_qat_bert
    export_hf(model, tmp_path / "hf")
    saved = load_file(tmp_path / "hf" / "model.safetensors")
    for name, (q, scale) in quantized_weights(model).items():
        assert torch.equal(saved[name], q.float() * scale), name  # bit for bit the int8 grid
    for name, module in pruner.layers.items():
        assert (saved[f"{name}.weight"][~M.get_mask(module)] == 0).all()

    inputs = {k: v.tolist() for k, v in batch(3, labels=False).items()}
    run = subprocess.run([sys.executable, "-c", LOAD_WITH_TRANSFORMERS_ONLY, str(tmp_path / "hf"), json.dumps(inputs)],
                         capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert not result["pruneofa_loaded"]
    assert all(not v for k, v in result["info"].items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    with torch.no_grad():
        expected = plain_model_copy(model, keep_quantized_values=True)(**batch(3, labels=False)).logits
    assert torch.allclose(torch.tensor(result["logits"]), expected, atol=1e-6)


def test_export_from_a_qat_directory_keeps_the_tokenizer_files(sparse_qat_bert, tmp_path):
    model, _ = sparse_qat_bert
    save_qat(model, tmp_path / "qat")
    (tmp_path / "qat" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    export_hf(tmp_path / "qat", tmp_path / "hf")
    assert (tmp_path / "hf" / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    saved = load_file(tmp_path / "hf" / "model.safetensors")
    for name, (q, scale) in quantized_weights(model).items():
        assert torch.equal(saved[name], q.float() * scale), name
