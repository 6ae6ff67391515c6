"""`pruneofa eval MODEL_DIR [RECIPE] [key=value]`: task metrics of a saved model, or title -> summary
retrieval recall of its encoder; also the pipeline's `eval` step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pruneofa.config.loader import text_values_parsed
from pruneofa.data.assets import resolve_model_path
from pruneofa.errors import UserError
from pruneofa.fileio import atomic_write_text
from pruneofa.sparsity.measure import sparsity_of_model
from pruneofa.models import load_tokenizer
from pruneofa.stages.recipes import EvalRecipe
from pruneofa.stages.registry import recipe_data, validate_recipe
from pruneofa.tasks.adapters import evaluate_splits, load_task_data, scored_splits
from pruneofa.tasks.task_models import check_positions, load_task_model


def recorded_recipe(model_dir: str) -> dict[str, Any]:
    meta = Path(model_dir) / "pruneofa.json"
    return json.loads(meta.read_text()).get("recipe", {}) if meta.is_file() else {}


def load_eval_recipe(model_dir: str, recipe: str | None, overrides: dict[str, Any]) -> EvalRecipe:
    """The eval recipe for MODEL_DIR; with no data.task, the task the model was trained on
    (overrides such as data.max_eval_samples=100 apply on top of it). kind=retrieval takes no task:
    MODEL_DIR may be any encoder, an offline/* asset or a hub name too."""
    data = recipe_data("eval", recipe, overrides)
    data["model"] = model_dir
    if data.get("kind") == "retrieval":
        return validate_recipe("eval", data)
    if not Path(model_dir).is_dir():
        raise UserError(f"model directory '{model_dir}' does not exist", "pass the output_dir of a finetune/transfer run")
    section = data.get("data") or {}
    if "task" not in section:
        recorded = recorded_recipe(model_dir).get("data")
        if not recorded:
            raise UserError(f"'{model_dir}' records no task (no pruneofa.json from finetune/transfer)",
                            "name the task: data.task=... (and its files)")
        data["data"] = {**recorded, **section}
    return validate_recipe("eval", data)


def run_eval(model_dir: str, recipe: str | None = None, overrides: dict[str, Any] | None = None,
             output: str | None = None) -> tuple[dict[str, float], Path]:
    """Score a saved model on every eval split (and a labelled test split), or its encoder on
    title -> summary retrieval (kind=retrieval); write the metrics as JSON."""
    r = load_eval_recipe(model_dir, recipe, overrides or {})
    if r.kind == "retrieval":
        from pruneofa.tasks.retrieval import evaluate_retrieval

        resolve_model_path(r.model)  # a missing path is reported as missing, not as a place to write to
        if output is None and not Path(model_dir).is_dir():  # never write into an installed package's files
            raise UserError(f"'{model_dir}' is not a local model directory to write eval_retrieval.json beside",
                            "pass --output FILE")
        metrics, default = evaluate_retrieval(r.model, r.retrieval, r.trust_remote_code), "eval_retrieval.json"
    else:
        tokenizer = load_tokenizer(r.model, r.trust_remote_code)
        task = load_task_data(r.data, tokenizer, with_train=False)
        model = load_task_model(r.model, task, r.trust_remote_code, "model", trained_head=True)
        check_positions(model, r.data.max_seq_len)
        sparsity = sparsity_of_model(model, recorded_recipe(model_dir) or None)["overall"]
        if r.engine != "torch":  # the same data and metric code, through the deployed engine
            from pruneofa.bench.task_model import engine_task_model

            model = engine_task_model(r.model, r.engine, r.threads)
        else:
            model.to("cuda" if torch.cuda.is_available() else "cpu")
        metrics = evaluate_splits(task, model, scored_splits(task, with_test=True), r.batch_size, tokenizer)
        metrics.update(sparsity=sparsity, engine=r.engine)
        default = "eval_metrics.json" if r.engine == "torch" else f"eval_metrics-{r.engine}.json"
    path = Path(output) if output else Path(model_dir) / default
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(metrics, indent=1))
    return metrics, path


def run_eval_step(model: str, output_dir: str, recipe: str | None = None, **overrides: Any) -> None:
    """The pipeline's eval step: its overrides (other than model) are the eval recipe's, text parsed as
    on the command line."""
    run_eval(model, recipe, text_values_parsed(overrides), str(Path(output_dir) / "eval_metrics.json"))
