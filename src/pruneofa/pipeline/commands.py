"""Pipeline steps that run a command rather than a training stage: eval, export and bench.

A command step's overrides are the command's options (`model` is MODEL_DIR, `format` is --format, ...);
which commands there are, and their options, come from the stage registry.
Each command writes its whole output into a temporary sibling directory that is renamed into place
only when it succeeded, with a marker file that tells the runner the step finished, so an
interrupted export or benchmark leaves nothing that looks done.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from pruneofa.stages.registry import STAGES, Stage

COMMANDS: dict[str, Stage] = {name: stage for name, stage in STAGES.items() if stage.command}


def check_options(stage: str, keys: list[str]) -> None:
    """Refuse a step key the command has no option for (eval passes unknown keys to the task recipe)."""
    if stage not in COMMANDS or stage == "eval":
        return
    allowed = COMMANDS[stage].options()
    unknown = [k for k in keys if k not in allowed and k not in ("overwrite", "resume")]
    if unknown:
        raise ValueError(f"unknown {stage} option(s) {', '.join(unknown)} "
                         f"(this command takes: {', '.join(allowed)})")


def run_command(stage: str, recipe: str | None, values: dict[str, Any]) -> Path:
    """Run a command step into values['output_dir'], atomically; returns that directory. `values` come
    from the runner's resolve_step, which has already refused a step without a model."""
    command = COMMANDS[stage]
    values = dict(values, **({"recipe": recipe} if recipe else {}))
    values.pop("resume", None)
    values.pop("overwrite", None)  # a finished command step is always re-made whole
    out = Path(values.pop("output_dir"))
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    kwargs = {command.renamed.get(k, k): v for k, v in values.items()}
    try:
        tmp.mkdir(parents=True)
        command.function()(output_dir=str(tmp), **kwargs)
        if not (tmp / command.marker).is_file():
            (tmp / command.marker).write_text(json.dumps({"command": stage, **values}, indent=1, default=str))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
