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


def test_cache_key_covers_sources_flags_and_cpu(tmp_path, monkeypatch):
    """Two checkouts with different kernel sources (or flags, or CPUs) never share a cached library:
    the key hashes the sources' bytes, the compiler, the flags and the CPU's model and flags."""
    from pruneofa.runtime import build

    compiler = build.find_compiler()
    src = tmp_path / "api.cpp"
    src.write_text("int x;\n")
    key = build._cache_key(compiler, build.NATIVE_FLAGS, [src])
    assert key == build._cache_key(compiler, build.NATIVE_FLAGS, [src])
    assert key != build._cache_key(compiler, build.PORTABLE_FLAGS, [src])
    monkeypatch.setattr(build, "_cpu_signature", lambda: "another cpu")
    assert key != build._cache_key(compiler, build.NATIVE_FLAGS, [src])
    monkeypatch.undo()
    src.write_text("int y;\n")
    assert key != build._cache_key(compiler, build.NATIVE_FLAGS, [src])
