"""The base of every typed config (recipes, pruning, training, data): unknown keys are refused and
assignments are validated like construction."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
