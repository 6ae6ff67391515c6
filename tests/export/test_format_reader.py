"""docs/format_reader.py, the standalone reader of docs/FORMAT.md, reads what save_compressed writes:
every tensor of the state dict, exactly, without pruneofa or torch."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pruneofa.export import load_compressed, save_compressed
from pruneofa.quantization.checkpoint import plain_model_copy
from tests.export.helpers import prune, tiny_bert

ROOT = Path(__file__).resolve().parents[2]
READER = ROOT / "docs" / "format_reader.py"
ALLOWED_IMPORTS = {"json", "lzma", "sys", "numpy", "safetensors", "zstandard"}

# run as a user without torch would: importing torch fails in this process
WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None
sys.path.insert(0, sys.argv[1])
import numpy as np
from format_reader import read_compressed
np.savez(sys.argv[3], **read_compressed(sys.argv[2]))
"""


def test_the_format_document_shows_the_reader_verbatim_and_it_imports_no_more_than_it_says():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "FORMAT.md").read_text(), flags=re.S)
    assert READER.read_text() in blocks
    imported = set()
    for node in ast.walk(ast.parse(READER.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED_IMPORTS


@pytest.mark.parametrize("dtype, options", [
    ("fp32", {}),                                               # zstd (default): zero runs, byte planes
    ("int8", {"per_channel": True, "int8_embeddings": True}),   # int8 with per-row and per-channel scales
    ("int8", {"codec": "lzma"}),                                # per-tensor scales, xz
    ("fp16", {"codec": "none"}),                                # format version 1: bitmask, nothing coded
    ("fp32", {"dense_dtype": "fp16", "codec": "none"}),
])
def test_the_standalone_reader_gives_every_tensor_exactly(dtype, options, tmp_path):
    model = tiny_bert(masked_lm=True)  # tied embeddings: stored once, as an alias
    prune(model)
    file = save_compressed(model, tmp_path / "model", dtype, **options)
    subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(READER.parent), str(file), str(tmp_path / "read.npz")],
                   check=True, capture_output=True, timeout=120)
    read = dict(np.load(tmp_path / "read.npz"))
    expected = load_compressed(file.parent).state_dict()  # pruneofa's own reader
    assert set(read) == set(expected)
    for name, tensor in expected.items():
        assert read[name].dtype == tensor.numpy().dtype and read[name].shape == tuple(tensor.shape), name
        assert np.array_equal(read[name].view(np.uint8), tensor.numpy().view(np.uint8)), name  # bit for bit
    if dtype == "fp32" and "dense_dtype" not in options:  # lossless: the model's own (mask-folded) weights
        for name, tensor in plain_model_copy(model, keep_quantized_values=True).state_dict().items():
            assert np.array_equal(read[name], tensor.numpy()), name
        assert any((read[name] == 0).mean() > 0.8 for name in read)
