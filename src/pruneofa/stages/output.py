"""Stage outputs: claim the output directory safely and write the final model atomically.

Both run on the main process only when launched with several processes (torchrun, accelerate
launch); the others wait for it, and a refusal (exit 2) is raised on every process alike.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from pruneofa.data.assets import resolve_model_path
from pruneofa.modeldir import copy_sentence_transformers_files
from pruneofa.version import __version__
from pruneofa.stages.recipes import RecipeBase
from pruneofa.errors import UserError
from pruneofa.fileio import atomic_write_text
from pruneofa.train.distributed import on_main, refuse_sharded_launch

RUN_FILE = "run.json"
# keys that may change between a run and its resumption
RESUMABLE_CHANGES = {"resume", "overwrite"}
RESUMABLE_TRAIN_CHANGES = {"max_steps", "save_every", "log_every", "eval_every", "keep_checkpoints"}


def _comparable(recipe: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in recipe.items() if k not in RESUMABLE_CHANGES}
    data["train"] = {k: v for k, v in data.get("train", {}).items() if k not in RESUMABLE_TRAIN_CHANGES}
    return data


def claim_output_dir(recipe: RecipeBase) -> Path:
    """Create or reuse `recipe.output_dir`. Call only after every input has loaded without error.

    - empty or missing: create it;
    - holds a run: resume=true continues it if it is the same run, overwrite=true replaces it,
      anything else is refused (exit 2) so a run is never mixed into another.
    """
    out = Path(recipe.output_dir)
    refuse_sharded_launch()
    on_main(lambda: _claim(out, recipe))
    return out


def _claim(out: Path, recipe: RecipeBase) -> None:
    current = recipe.model_dump(mode="json")
    if out.exists() and any(out.iterdir()):
        previous = out / RUN_FILE
        if recipe.overwrite:
            shutil.rmtree(out)
        elif recipe.resume and previous.is_file():
            if _comparable(json.loads(previous.read_text())) != _comparable(current):
                raise UserError(f"output_dir '{out}' holds a different run than this recipe",
                                "resume with the same recipe, or pass overwrite=true to start over")
        else:
            raise UserError(f"output_dir '{out}' already holds a run",
                            "pass resume=true to continue it, overwrite=true to replace it, or another output_dir=")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RUN_FILE, json.dumps(current, indent=1))


def write_model_dir(model: Any, tokenizer: Any, out: Path, stage: str, recipe: RecipeBase,
                    metrics: dict[str, Any], extra: dict[str, Any] | None = None,
                    save: Callable[[Any, Path], None] | None = None) -> None:
    """Write config, weights, tokenizer, metrics.json and pruneofa.json into `out`, and the
    sentence-transformers files (modules.json, pooling, ...) of a sentence-transformers `recipe.model`.
    `save(model, dir)` writes the weights (default: a plain transformers checkpoint with the masks
    folded; quantize passes the QAT writer).

    Files are written to a temporary folder and moved in one by one with os.replace; pruneofa.json
    goes last, so its presence means the model directory is complete.
    """
    on_main(lambda: _write_model_dir(model, tokenizer, out, stage, recipe, metrics, extra, save))


def _save_plain(model: Any, out: Path) -> None:
    from pruneofa.sparsity.masks import plain_state_dict

    model.save_pretrained(out, state_dict=plain_state_dict(model))


def _write_model_dir(model: Any, tokenizer: Any, out: Path, stage: str, recipe: RecipeBase,
                     metrics: dict[str, Any], extra: dict[str, Any] | None,
                     save: Callable[[Any, Path], None] | None) -> None:
    from pruneofa.sparsity.measure import sparsity_of_model

    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (save or _save_plain)(model, tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    copy_sentence_transformers_files(resolve_model_path(recipe.model), tmp)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    meta = {"stage": stage, "pruneofa_version": __version__, "recipe": recipe.model_dump(mode="json"),
            "sparsity": sparsity_of_model(model, recipe), **(extra or {})}
    (out / "pruneofa.json").unlink(missing_ok=True)
    for f in sorted(tmp.iterdir()):
        os.replace(f, out / f.name)
    tmp.rmdir()
    atomic_write_text(out / "pruneofa.json", json.dumps(meta, indent=1))
