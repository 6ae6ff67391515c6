"""bench/kernel_sets.py's --layers: IN x OUT shapes, and a one-line error (exit 2) for anything else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_layer_shapes_parse_and_bad_ones_are_refused(monkeypatch):
    import argparse

    monkeypatch.syspath_prepend(str(BENCH))
    from kernel_sets import layer_shape

    assert layer_shape("384x1536") == (384, 1536) and layer_shape("768X3072") == (768, 3072)
    for bad in ("768", "0x384", "axb", "1x2x3"):
        with pytest.raises(argparse.ArgumentTypeError, match="IN x OUT"):
            layer_shape(bad)


def test_a_bad_layer_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, str(BENCH / "kernel_sets.py"), "--layers", "768"], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("layer '768' is not IN x OUT features; write it like 768x3072")
