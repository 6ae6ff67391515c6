"""Build the C++ kernels (runtime/csrc/) with the machine's compiler at first use, cache the library, load it.

The library is plain C ABI + OpenMP, loaded with ctypes: no torch headers, so a build takes a
few seconds and needs no network. It links `libgomp.so.1`, the same soname torch's OpenMP
runtime has, so once torch is imported both share one thread pool (no two pools spinning on
two cores).

The cache key covers the sources, the compiler, the flags and the CPU (the build uses
-march=native), so a copied cache never runs code the CPU cannot execute. Concurrent builds
(pytest -n 2) are safe: each writes a temporary file and renames it into place.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import torch  # noqa: F401  (imported first so that its libgomp is the one the kernels bind to)

LIBRARY_NAME = "libpruneofa_kernels.so"
NATIVE_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++17"]
PORTABLE_FLAGS = ["-O3", "-fopenmp", "-fPIC", "-shared", "-std=c++17"]  # no AVX-512: plain loops


class KernelBuildError(RuntimeError):
    """The sparse kernels could not be built or loaded (no compiler, compile error, ...)."""


def source_dir() -> Path:
    """csrc/ beside this file, shipped as package data so a wheel builds too (override with PRUNEOFA_CSRC)."""
    if env := os.environ.get("PRUNEOFA_CSRC"):
        return Path(env)
    return Path(__file__).resolve().parent / "csrc"


def cache_dir() -> Path:
    if env := os.environ.get("PRUNEOFA_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pruneofa" / "kernels"


def find_compiler() -> str:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    raise KernelBuildError(
        "no C++ compiler found for the sparse kernels; install one (e.g. `apt-get install g++`) or set CXX"
    )


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _cpu_signature() -> str:
    lines = _cpuinfo_lines()
    if not lines:
        return "unknown-cpu"
    wanted = ("model name", "flags")
    return "|".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo), to state beside every speed figure."""
    return next((line.split(":", 1)[1].strip() for line in _cpuinfo_lines() if line.startswith("model name")), None)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo), e.g. {"avx2", "fma", "avx512_vnni", ...}."""
    return set(next((line.split(":", 1)[1].split() for line in _cpuinfo_lines() if line.startswith("flags")), []))


def _sources(src: Path) -> list[Path]:
    files = sorted([*src.glob("*.cpp"), *src.glob("*.h")])
    if not any(f.suffix == ".cpp" for f in files):
        raise KernelBuildError(f"no kernel sources in {src} (set PRUNEOFA_CSRC to the csrc/ folder)")
    return files


def _cache_key(compiler: str, flags: list[str], files: list[Path]) -> str:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    digest = hashlib.sha256()
    for part in [*version, " ".join(flags), _cpu_signature()]:
        digest.update(part.encode())
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def _compile(compiler: str, flags: list[str], files: list[Path], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [compiler, *flags, *[str(f) for f in files if f.suffix == ".cpp"], "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise KernelBuildError(f"compiling the sparse kernels failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    os.replace(tmp, target)  # atomic: a concurrent build of the same key just wins the rename


def library_path(portable: bool = False, target: list[str] | None = None) -> Path:
    """Path of the built library, compiling it first if the cache lacks it. target: compiler flags for
    another kernel set than this CPU's (e.g. ["-march=x86-64-v3"]: the AVX2 kernels), for tests and
    benchmarks on a CPU that runs it; the default is -march=native (or, portable, no SIMD flags)."""
    compiler = find_compiler()
    files = _sources(source_dir())
    flags = PORTABLE_FLAGS if portable else NATIVE_FLAGS
    if target is not None:
        flags = [*PORTABLE_FLAGS, *target]
    path = cache_dir() / _cache_key(compiler, flags, files) / LIBRARY_NAME
    if not path.exists():
        _compile(compiler, flags, files, path)
    return path


@lru_cache(maxsize=1)
def _load() -> ctypes.CDLL | KernelBuildError:
    """Build/load once per process; a failure is remembered too, so it is not retried per layer."""
    try:
        return ctypes.CDLL(str(library_path(portable=False)))
    except (KernelBuildError, OSError) as err:
        warnings.warn(f"native kernel build failed, trying the portable one: {err}", RuntimeWarning, stacklevel=3)
    try:
        return ctypes.CDLL(str(library_path(portable=True)))
    except (KernelBuildError, OSError) as err:
        return KernelBuildError(str(err))


def load_library() -> ctypes.CDLL:
    """The kernels as a ctypes library; raises KernelBuildError if neither build works."""
    lib = _load()
    if isinstance(lib, KernelBuildError):
        raise lib
    return lib


def kernels_available() -> bool:
    return not isinstance(_load(), KernelBuildError)
