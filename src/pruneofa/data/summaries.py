"""Titled Wikipedia summaries: (title, extract) pairs of `offline/wiki-summaries` or a JSON file
in its layout, {key: {"title": ..., "extract": ..., ...}}.

The extracts come out stripped, blank ones dropped, in file order: for `offline/wiki-summaries` the
same documents, in the same order, as the LM stages read for pre-training (`pruneofa.data.corpus`),
so a held-out split computed on these extracts is the one the LM stages held out.
"""

from __future__ import annotations

import json
from pathlib import Path

from pruneofa.data.assets import asset_path, is_asset
from pruneofa.errors import UserError

LAYOUT = '{key: {"title": ..., "extract": ...}}'


def read_titled_summaries(name_or_path: str, setting: str = "corpus file") -> list[tuple[str, str]]:
    """(title, extract) of every entry with a non-blank extract; the key stands in for a missing title."""
    path = asset_path(name_or_path) if is_asset(name_or_path) else Path(name_or_path)
    if not path.is_file():
        raise UserError(f"{setting} '{name_or_path}' not found", "pass offline/wiki-summaries or an existing JSON file")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{setting} '{name_or_path}' is not readable JSON ({type(err).__name__})",
                        f"pass a JSON file laid out as {LAYOUT}") from None
    if not isinstance(entries, dict):
        raise UserError(f"{setting} '{name_or_path}' is not a JSON object of articles", f"lay it out as {LAYOUT}")
    pairs = []
    for key, entry in entries.items():
        if not isinstance(entry, dict):
            continue  # corpus.py skips these too; skipping keeps both readers on the same documents
        extract = str(entry.get("extract") or "").strip()
        if extract:
            pairs.append((str(entry.get("title") or key).strip(), extract))
    if not pairs:
        raise UserError(f"{setting} '{name_or_path}' holds no article with an extract", f"lay it out as {LAYOUT}")
    return pairs


def read_all(files: list[str], setting: str = "corpus file") -> list[tuple[str, str]]:
    """The pairs of several files, concatenated in order (as the LM stages join their train_files)."""
    return [pair for name in files for pair in read_titled_summaries(name, setting)]
