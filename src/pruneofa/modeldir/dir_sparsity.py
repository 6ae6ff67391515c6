"""`pruneofa inspect`: how sparse each prunable layer of a model directory really is.

The weights are read straight from the safetensors files; the model is only built on the `meta`
device to learn which tensors belong to prunable layers, so inspecting costs no weight memory twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from pruneofa.errors import UserError
from pruneofa.modeldir.layout import config_and_class
from pruneofa.sparsity.measure import recipe_selection, summarize
from pruneofa.sparsity.selection import select_prunable


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    raise UserError(f"'{model_dir}' has no model.safetensors", "inspect a directory written by save_pretrained or pruneofa")


def inspect_dir(model_dir: str | Path) -> dict[str, Any]:
    """{"overall": float, "layers": {module name: sparsity}} over the prunable layers of a saved model."""
    import transformers

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"'{model_dir}' is not a transformers model directory (no config.json)", "pass a model directory")
    config, cls = config_and_class(model_dir)  # a compacted checkpoint (export --compact) has its own class
    with torch.device("meta"):
        model = cls(config) if cls is not None else transformers.AutoModel.from_config(config)
    meta = model_dir / "pruneofa.json"
    recipe = json.loads(meta.read_text()).get("recipe") if meta.is_file() else None
    names = select_prunable(model, *recipe_selection(recipe))
    counts: dict[str, tuple[int, int]] = {}
    for path in _weight_files(model_dir):
        try:
            with safe_open(str(path), framework="pt") as fh:
                keys = set(fh.keys())
                for name in names:
                    if f"{name}.weight" in keys:
                        w = fh.get_tensor(f"{name}.weight")
                        counts[name] = (int((w == 0).sum()), w.numel())
        except Exception as err:  # noqa: BLE001 - safetensors raises several types for damaged files
            raise UserError(f"corrupted or truncated safetensors file '{path}': {err}", "re-export the model") from None
    return summarize(dict(sorted(counts.items())))


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{'layer':<60} sparsity"]
    lines += [f"{name:<60} {s:7.2%}" for name, s in report["layers"].items()]
    dense = [n for n, s in report["layers"].items() if s == 0.0]
    lines.append(f"{'overall (' + str(len(report['layers'])) + ' prunable layers)':<60} {report['overall']:7.2%}")
    lines.append(f"dense prunable layers: {len(dense)}" + (f" ({', '.join(dense[:5])}{' ...' if len(dense) > 5 else ''})"
                                                         if dense else ""))
    lines.append("embeddings and LM/task heads are never pruned and are not listed")
    return "\n".join(lines)
