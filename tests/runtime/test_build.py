"""The kernel sources travel with the package, so an installed wheel can build the sparse engine."""

import tomllib
from fnmatch import fnmatch
from pathlib import Path

from pruneofa.runtime.build import source_dir

ROOT = Path(__file__).resolve().parents[2]


def test_kernel_sources_live_in_the_package_and_are_declared_as_package_data():
    src = source_dir()
    assert (src / "api.cpp").is_file()
    package = ROOT / "src" / "pruneofa"
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pruneofa"]
    for source in src.iterdir():
        relative = source.relative_to(package).as_posix()
        assert any(fnmatch(relative, g) for g in globs), f"{relative} would be left out of the wheel"
