"""The scripts in studies/ are not a package: tests import them by name with the folder on sys.path."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

STUDIES = Path(__file__).resolve().parents[2] / "studies"


@pytest.fixture()
def import_study(monkeypatch):
    """import_study(name) -> the module studies/<name>.py, forgotten again after the test."""
    monkeypatch.syspath_prepend(str(STUDIES))
    loaded: list[str] = []

    def load(name: str):
        loaded.append(name)
        return importlib.import_module(name)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
