"""How sparse a model is: the share of zeros in its prunable layers (those a recipe's pruning selects)."""

from __future__ import annotations

from typing import Any

import torch

from pruneofa.sparsity.config import DEFAULT_INCLUDE
from pruneofa.sparsity.selection import select_prunable


def recipe_selection(recipe: Any) -> tuple[list[str], list[str]]:
    """include/exclude regexes of a recipe (object or dict), or the defaults."""
    pruning = recipe.get("pruning") if isinstance(recipe, dict) else getattr(recipe, "pruning", None)
    if not pruning:
        return list(DEFAULT_INCLUDE), []
    if isinstance(pruning, dict):
        return pruning.get("include", list(DEFAULT_INCLUDE)), pruning.get("exclude", [])
    return pruning.include, pruning.exclude


def summarize(zeros_and_sizes: dict[str, tuple[int, int]]) -> dict[str, Any]:
    zeros = sum(z for z, _ in zeros_and_sizes.values())
    total = sum(n for _, n in zeros_and_sizes.values())
    return {"overall": zeros / total if total else 0.0,
            "layers": {name: z / n for name, (z, n) in zeros_and_sizes.items()}}


def sparsity_of_model(model: torch.nn.Module, recipe: Any = None) -> dict[str, Any]:
    include, exclude = recipe_selection(recipe)
    counts = {name: (int((m.weight == 0).sum()), m.weight.numel())
              for name, m in select_prunable(model, include, exclude).items()}
    return summarize(counts)
