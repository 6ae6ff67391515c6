"""Which layers to prune: Linear/Conv1D modules whose names match `include` and not `exclude`."""

from __future__ import annotations

import re

from torch import nn

from pruneofa.errors import UserError
from pruneofa.sparsity.masks import PRUNABLE_TYPES


def select_prunable(model: nn.Module, include: list[str], exclude: list[str]) -> dict[str, nn.Module]:
    """Name -> module of every prunable layer: a Linear or Conv1D matched by a regex in `include`
    (searched anywhere in the module name) and by none in `exclude`."""
    try:
        inc = [re.compile(p) for p in include]
        exc = [re.compile(p) for p in exclude]
    except re.error as err:
        raise UserError(f"bad regex in pruning.include/exclude: {err}", "fix the pattern (Python re syntax)") from None
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES)
        and any(p.search(name) for p in inc)
        and not any(p.search(name) for p in exc)
    }
