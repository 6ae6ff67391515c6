"""The README's Python examples are the files in examples/, and they run."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["trainer_callback.py", "plain_loop.py"])
def test_readme_shows_the_example_verbatim(name):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert (ROOT / "examples" / name).read_text() in blocks


@pytest.mark.slow
@pytest.mark.parametrize("name,out,target", [("trainer_callback.py", "runs/example-trainer/final", 0.90),
                                             ("plain_loop.py", "runs/example-loop", 0.85)])
def test_example_runs_and_saves_a_sparse_plain_model(name, out, target, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    weights = load_file(str(tmp_path / out / "model.safetensors"))
    assert not any("parametrizations" in k for k in weights)
    pruned = [w for k, w in weights.items() if re.search(r"encoder\.layer\.\d+\..*weight$", k) and w.ndim == 2]
    zeros = sum(int((w == 0).sum()) for w in pruned) / sum(w.numel() for w in pruned)
    assert zeros == pytest.approx(target, abs=0.01)
