"""Pipeline steps that run a command rather than a training stage: eval, export and bench.

A command step's overrides are the command's options (`model` is MODEL_DIR, `format` is --format, ...).
Each command writes its whole output into a temporary sibling directory that is renamed into place
only when it succeeded, with a marker file that tells the runner the step finished, so an
interrupted export or benchmark leaves nothing that looks done.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable



@dataclass(frozen=True)
class Command:
    target: str               # "module:function", imported when the step runs (it pulls in torch)
    marker: str               # the file whose presence means the step finished
    renamed: dict[str, str]   # step key -> parameter name of the function, where they differ

    def function(self) -> Callable[..., Any]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def options(self) -> list[str]:
        """The step keys this command takes: read from the function itself, so new options need no edit here."""
        back = {v: k for k, v in self.renamed.items()}
        return [back.get(p, p) for p in inspect.signature(self.function()).parameters if p != "output_dir"]


def run_eval_step(model: str, output_dir: str, recipe: str | None = None, **overrides: Any) -> None:
    from pruneofa.pipeline.runner import as_args
    from pruneofa.stages.task import run_eval

    run_eval(model, recipe, as_args(overrides), str(Path(output_dir) / "eval_metrics.json"))


COMMANDS: dict[str, Command] = {
    "eval": Command("pruneofa.pipeline.commands:run_eval_step", "eval_metrics.json", {}),
    "export": Command("pruneofa.stages.export_cmd:run_export", "export.json", {"model": "model_dir", "format": "fmt"}),
    "bench": Command("pruneofa.runtime.benchmark:run_bench_command", "bench.json", {"model": "model_dir"}),
}


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
