"""`pruneofa quantize`: 8-bit quantization-aware training on a downstream task (Q8BERT style, as in
the paper's Table 4), keeping the sparsity pattern exactly.

The task stage's code path with one step added and a different writer:
  1. the model's zero pattern is locked (pruning.method=lock: mask = weight != 0),
  2. then int8 fake quantization is added (`prepare_qat`): weights fake_quant(mask * w), so every
     pruned weight quantizes to exactly 0 and the sparsity is unchanged,
  3. the same training (TrainingJob/fit, KD from the task teacher) and evaluation as finetune/transfer,
  4. the output is a QAT checkpoint (`save_qat`: float weights + qat_state.safetensors with the scales
     and observer ranges) plus metrics.json (the QAT model's task metrics and sparsity) and pruneofa.json.

`pruneofa export DIR --format onnx --int8` uses the scales; `pruneofa eval DIR` loads the float weights
(without fake quantization), so the QAT model's own metrics are the ones in metrics.json.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from transformers import set_seed

from pruneofa.version import __version__
from pruneofa.stages.recipes import QuantizeRecipe
from pruneofa.errors import UserError
from pruneofa.inspect import sparsity_of_model
from pruneofa.quantization import prepare_qat, qat_layers, save_qat
from pruneofa.sparsity.pruner import Pruner
from pruneofa.stages.output import claim_output_dir
from pruneofa.stages.task import (
    batch_maker,
    evaluate_splits,
    load_training_inputs,
    scored_splits,
    task_objective,
)
from pruneofa.fileio import atomic_write_text
from pruneofa.train.distributed import on_main
from pruneofa.train.loop import TrainingJob, fit


def run_quantize_stage(recipe: QuantizeRecipe) -> Path:
    set_seed(recipe.seed)  # before anything is built: QAT observers and data order follow the recipe's seed
    # the model is a finetune/transfer output: its task head is trained and must match the task
    tokenizer, task, model, teacher = load_training_inputs(recipe, trained_head=True)
    distill = recipe.distill
    if recipe.pruning.method == "gmp":
        raise UserError("pruning.method=gmp is not supported by quantize",
                        "prune first (finetune pruning.method=gmp or transfer), then quantize with pruning.method=lock")
    pruner = None if recipe.pruning.method == "none" else Pruner(model, recipe.pruning)  # lock first ...
    prepare_qat(model, recipe.quant)  # ... then fake quantization: fake_quant(mask * w), zeros stay 0
    out = claim_output_dir(recipe)

    compute_loss = task_objective(task, distill)

    eval_batch = max(1, recipe.train.batch_size // recipe.train.grad_accum)
    job = TrainingJob(
        model=model, n_examples=len(task.train), make_batch=batch_maker(task.train, tokenizer, model),
        compute_loss=compute_loss, lr_at=lambda s: recipe.train.lr_at(s, None), config=recipe.train,
        output_dir=out, seed=recipe.seed, teacher=teacher, pruner=pruner, resume=recipe.resume,
        evaluate=lambda m: evaluate_splits(task, m, scored_splits(task, with_test=False), eval_batch, tokenizer),
        description=f"quantize {Path(recipe.model).name} on {recipe.data.task}",
    )
    result = fit(job)
    model.eval()
    metrics = {"step": result.step, **result.metrics, "train_tokens": result.tokens}
    # the final scores are the QAT model's (fake-quantized weights and inputs), whatever fit last evaluated
    metrics.update(evaluate_splits(task, model, scored_splits(task, with_test=True), eval_batch, tokenizer))
    metrics["sparsity"] = sparsity_of_model(model, recipe)["overall"]
    metrics["qat_layers"] = len(qat_layers(model))
    meta = {"stage": "quantize", "pruneofa_version": __version__, "recipe": recipe.model_dump(mode="json"),
            "sparsity": sparsity_of_model(model, recipe), "task": recipe.data.task,
            "head": task.auto_class.__name__.removeprefix("AutoModelFor"), "quantized": "int8-qat"}
    on_main(lambda: write_qat_dir(model, tokenizer, out, metrics, meta))
    return out


def write_qat_dir(model, tokenizer, out: Path, metrics: dict, meta: dict) -> None:
    """save_qat into a temporary folder, moved in file by file; pruneofa.json last (= complete)."""
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_qat(model, tmp, tokenizer)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "pruneofa.json").unlink(missing_ok=True)
    for f in sorted(tmp.iterdir()):
        os.replace(f, out / f.name)
    tmp.rmdir()
    atomic_write_text(out / "pruneofa.json", json.dumps(meta, indent=1))
