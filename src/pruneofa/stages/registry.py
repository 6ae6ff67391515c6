"""The stage registry: every stage and command of `pruneofa`, named once, below both the CLI and the pipeline.

Each entry holds the name, the one-line help, the runner, the recipe schema and the folder of its
shipped recipes. Training stages (teacher, prune, finetune, transfer, quantize) run a validated
recipe; commands (eval, export, bench) take options, and eval a recipe of its own as well. The CLI
builds its sub-commands from here and the pipeline checks its steps against it; both hand their
overrides over as a dict of dotted keys (`run_stage`).

A new stage: its recipe schema in `stages/recipes.py`, its runner in a module of `stages/`, its
shipped recipes in `recipes/<name>/`, and one `Stage(...)` line below.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from pruneofa.config.loader import apply_overrides, find_recipe, load_yaml, validate
from pruneofa.errors import UserError

DONE_FILE = "pruneofa.json"  # a training stage's output is complete once this file is in it


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    runner: str                 # "module:function", imported when it runs (it pulls in torch)
    schema: str | None = None   # class in `pruneofa.stages.recipes` of its recipe (None: options only)
    recipes: str | None = None  # folder of its shipped recipes under pruneofa/recipes
    command: bool = False       # eval, export, bench: a command (options) rather than a training recipe
    marker: str = DONE_FILE     # the file whose presence in the output dir means it finished
    renamed: Mapping[str, str] = field(default_factory=dict)  # option name -> runner parameter, where they differ
    options_type: str | None = None  # "module:Class" whose names() the runner also takes as **options (bench)

    def function(self) -> Callable[..., Any]:
        return _imported(self.runner)

    def schema_class(self) -> type:
        from pruneofa.stages import recipes

        return getattr(recipes, self.schema)

    def options(self) -> list[str]:
        """A command's option names: read from its runner, so a new option needs no edit here."""
        back = {v: k for k, v in self.renamed.items()}
        params = inspect.signature(self.function()).parameters.values()
        named = [back.get(p.name, p.name) for p in params if p.name != "output_dir" and p.kind != p.VAR_KEYWORD]
        if self.options_type:
            named += _imported(self.options_type).names()
        return named


def _imported(ref: str) -> Any:
    """"module:name" -> that object, imported when first needed (the runners pull in torch)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


_LM = "pruneofa.stages.lm:run_lm_stage"
_TASK = "pruneofa.stages.task:run_task_stage"
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("teacher", "stage 1: continue LM training of a pre-trained model (creates a missing LM head)", _LM,
          "TeacherRecipe", "teacher"),
    Stage("prune", "stage 2: student pruning with GMP + KD + learning-rate rewinding", _LM, "PruneRecipe", "prune"),
    Stage("finetune", "dense fine-tuning on a task (the task teacher, baselines; pruning.method=gmp prunes "
          "downstream)", _TASK, "FinetuneRecipe", "finetune"),
    Stage("transfer", "stage 3: sparse transfer to a task with the zero pattern locked + KD from the task teacher",
          _TASK, "TransferRecipe", "transfer"),
    Stage("quantize", "8-bit quantization-aware training on a task (zero pattern locked + KD); writes a QAT dir",
          _TASK, "QuantizeRecipe", "quantize"),
    Stage("eval", "task metrics of a finetune/transfer model dir (default: its own task); with the retrieval "
          "recipe, title -> summary recall@1/@10 of any model's encoder", "pruneofa.stages.eval:run_eval_step",
          "EvalRecipe", "eval", command=True, marker="eval_metrics.json"),
    Stage("export", "write a model dir as hf, compressed (bitmask) or onnx (fp32 / int8 QDQ)",
          "pruneofa.stages.export_cmd:run_export", command=True, marker="export.json",
          renamed={"model": "model_dir", "format": "fmt"}),
    Stage("bench", "latency, throughput, memory and size of every inference engine vs dense fp32 PyTorch",
          "pruneofa.bench.command:run_bench_step", command=True, marker="bench.json", renamed={"model": "model_dir"},
          options_type="pruneofa.bench.options:BenchOptions"),
)}
TRAINING_STAGES = [name for name, s in STAGES.items() if not s.command]


def validate_recipe(stage: str, data: dict[str, Any]) -> Any:
    """The recipe `data` checked by `stage`'s schema (a recipe written for another stage is refused)."""
    if data.setdefault("stage", stage) != stage:
        raise UserError(f"recipe is for stage '{data['stage']}', not '{stage}'", f"run: pruneofa {data['stage']} ...")
    return validate(STAGES[stage].schema_class(), data)


def recipe_data(stage: str, recipe: str | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The unvalidated recipe: shipped name or YAML path (default: offline), with the overrides applied."""
    return apply_overrides(load_yaml(find_recipe(STAGES[stage].recipes, recipe)), dict(overrides or {}))


def load_recipe(stage: str, recipe: str | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
    """The validated recipe of `stage`; `overrides` maps dotted keys to values."""
    return validate_recipe(stage, recipe_data(stage, recipe, overrides))


def run_stage(stage: str, recipe: str | None = None, overrides: Mapping[str, Any] | None = None) -> Path:
    """Run a training stage in this process, as `pruneofa STAGE [RECIPE] key=value ...` does; its output dir."""
    return STAGES[stage].function()(load_recipe(stage, recipe, overrides))
