"""Stage 3 of Prune OFA, downstream tasks: `finetune`, `transfer` and `quantize`.

All three are one code path (`run_task_stage`) with different recipe defaults:
  finetune  dense fine-tuning (the task teacher, the dense baseline); with pruning.method=gmp it is
            downstream-only pruning (paper Table 3), with teacher=PATH it distills;
  transfer  the sparse pre-trained model's zeros are locked (pruning.method=lock: mask = weight != 0)
            while the non-zeros and the new task head train, with KD from the dense task teacher.
            Layers the checkpoint lacks are new and dense, and lock keeps them so: the head, and BERT's
            pooler when starting from an MLM-only checkpoint (it then lowers the reported sparsity a little).
  quantize  8-bit quantization-aware training (Q8BERT style, the paper's Table 4) through the QAT hook
            (`QuantizeHook`): the zero pattern is locked first (pruning.method=lock), then int8 fake
            quantization is added (`prepare_qat`: weights fake_quant(mask * w), so every pruned weight
            quantizes to exactly 0), the same training and evaluation follow, and the output is a QAT
            dir (`save_qat`: float weights + qat_state.safetensors with the scales and observer ranges)
            whose metrics.json holds the QAT model's own scores. `pruneofa export DIR --format onnx
            --int8` uses the scales; `pruneofa eval DIR` loads the float weights.
Tasks are sequence classification (single/pair, any number of labels, regression) and extractive
QA; `pruneofa.tasks` loads and scores them, this module trains and evaluates models on them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import set_seed
from transformers.modeling_outputs import SequenceClassifierOutput

from pruneofa.distill import DistillConfig, prepare_for_distillation, representation_outputs
from pruneofa.errors import UserError
from pruneofa.sparsity.measure import sparsity_of_model
from pruneofa.models import check_same_vocab, load_tokenizer
from pruneofa.quantization import prepare_qat, qat_layers, save_qat
from pruneofa.sparsity.pruner import Pruner
from pruneofa.stages.output import claim_output_dir, write_model_dir
from pruneofa.stages.recipes import TaskRecipe
from pruneofa.tasks.adapters import (
    TARGETS,
    TEACHER_LOGITS,
    ClassificationTask,
    batch_maker,
    evaluate_splits,
    forward_all,
    load_task_data,
    scored_splits,
)
from pruneofa.tasks.task_models import check_positions, head_name, load_task_model, load_task_model_and_new_keys
from pruneofa.train import distributed as D
from pruneofa.train.loop import TrainingJob, fit
from pruneofa.train.new_head import fit_new_head

log = logging.getLogger(__name__)


def task_objective(task: Any, distill: DistillConfig) -> Callable:
    """`compute_loss` for `fit`: the student sees the batch with its targets (its own loss), the
    frozen teacher sees it without them; `task.kd_loss` combines the two. With α_kd = 0 the
    teacher's head serves no term and only its base model runs. The models must have been through
    `prepare_for_distillation` (`load_training_inputs` does it)."""
    outputs = representation_outputs(distill)

    def compute_loss(student, frozen_teacher, batch):
        batch = dict(batch)
        cached = batch.pop(TEACHER_LOGITS, None)  # `precompute_teacher_logits`: the teacher already ran
        out_s = student(**batch, **outputs)
        out_t = None
        if cached is not None:
            out_t = SequenceClassifierOutput(logits=cached)
        elif frozen_teacher is not None and distill.uses_teacher:
            teacher = frozen_teacher if distill.alpha_kd > 0 else frozen_teacher.base_model
            with torch.no_grad():
                out_t = teacher(**{k: v for k, v in batch.items() if k not in TARGETS}, **outputs)
        return task.kd_loss(out_s, out_t, distill, batch.get("attention_mask"))

    return compute_loss


def precompute_teacher_logits(recipe: TaskRecipe, task: Any, teacher: Any, batch_size: int, tokenizer) -> bool:
    """Give the training set a column of the frozen teacher's logits, run once per example, when the run would
    otherwise run the teacher on more examples than the set holds: the demo's transfer sees its 10,349 reviews
    1.48 times. The teacher is in eval mode either way, so the logits are those of a per-batch forward up to
    float rounding (the padding differs). Only for logit KD on a sequence classifier, one process on a CPU;
    representation terms need the teacher's hidden states of each batch. Returns whether it did."""
    distill = recipe.distill
    if (teacher is None or distill.alpha_kd == 0 or distill.represents or not isinstance(task, ClassificationTask)
            or torch.cuda.is_available() or D.world_size() > 1
            or recipe.train.max_steps * recipe.train.batch_size <= len(task.train)):
        return False
    logits = forward_all(teacher, task.train, batch_size, tokenizer, ("logits",), progress="teacher logits")["logits"]
    task.train = task.train.add_column(TEACHER_LOGITS, logits.tolist())
    log.info("teacher logits precomputed for the %d training examples", len(task.train))
    return True


def load_training_inputs(recipe: TaskRecipe, trained_head: bool) -> tuple[Any, Any, Any, Any, list[str]]:
    """(tokenizer, task, model, teacher, names of the tensors created for the model) of a task-training
    recipe, every input checked before the output dir is claimed. `trained_head`: the model must
    already carry this task's head."""
    tokenizer = load_tokenizer(recipe.model, recipe.trust_remote_code)
    task = load_task_data(recipe.data, tokenizer)
    if task.train is None:
        raise UserError(f"data.task={recipe.data.task} has no training split", "set data.train_file")
    if len(task.train) < recipe.train.batch_size:
        raise UserError(f"only {len(task.train)} training examples for train.batch_size={recipe.train.batch_size}",
                        "add data or lower train.batch_size")
    model, new_keys = load_task_model_and_new_keys(recipe.model, task, recipe.trust_remote_code, "model",
                                                   trained_head=trained_head)
    check_positions(model, recipe.data.max_seq_len)
    teacher = None
    if recipe.distill.uses_teacher:
        teacher = load_task_model(recipe.teacher, task, recipe.trust_remote_code, "teacher", trained_head=True)
        check_same_vocab(model, teacher)
        prepare_for_distillation(model, teacher, recipe.distill)
    return tokenizer, task, model, teacher, new_keys


class TaskHook:
    """What finetune and transfer do around the shared training; `QuantizeHook` overrides it."""

    trained_head = False  # the model must already carry this task's trained head

    def check(self, recipe: TaskRecipe) -> None:
        pass

    def prepare(self, model, pruner: Pruner | None, recipe: TaskRecipe) -> None:
        """After the masks are on, before the output dir is claimed."""
        if recipe.pruning.method == "lock" and pruner.overall_sparsity() == 0:
            log.warning("pruning.method=lock on '%s', which has no zeros in its prunable layers: it stays dense",
                        recipe.model)

    def settle(self, model, pruner: Pruner | None) -> None:
        """After training, before the test split is scored: the masks are folded into the weights."""
        if pruner is not None:
            pruner.finalize()

    def finish(self, model, pruner: Pruner | None, task, eval_batch: int, tokenizer) -> dict[str, Any]:
        """After training: the final scores. fit's last evaluation scored the validation splits on the final model;
        the test split is scored once, here, never during training."""
        self.settle(model, pruner)
        return evaluate_splits(task, model, ["test"], eval_batch, tokenizer) if task.test is not None else {}

    def extra(self, model) -> tuple[dict[str, Any], dict[str, Any]]:
        """(metrics, pruneofa.json entries) of this kind of stage."""
        return {}, {}

    save = None  # how the model dir is written (None: a plain transformers checkpoint, masks folded)


class QuantizeHook(TaskHook):
    """`quantize`: the model is a finetune/transfer output (its task head is trained and must match the
    task); int8 fake quantization goes on after the lock masks; the output is a QAT dir."""

    trained_head = True

    def check(self, recipe) -> None:
        if recipe.pruning.method == "gmp":
            raise UserError("pruning.method=gmp is not supported by quantize",
                            "prune first (finetune pruning.method=gmp or transfer), then quantize with pruning.method=lock")

    def prepare(self, model, pruner, recipe) -> None:
        prepare_qat(model, recipe.quant)  # after the lock: fake_quant(mask * w), zeros stay 0

    def settle(self, model, pruner) -> None:
        model.eval()  # the QAT model is scored and saved as it is: fake-quantized weights and inputs, observers frozen

    def extra(self, model) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"qat_layers": len(qat_layers(model))}, {"quantized": "int8-qat"}

    @staticmethod
    def save(model, out: Path) -> None:
        save_qat(model, out)


def run_task_stage(recipe: TaskRecipe) -> Path:
    hook = QuantizeHook() if recipe.stage == "quantize" else TaskHook()
    set_seed(recipe.seed)  # before any model is built: a new task head, the QAT observers and the data order
    tokenizer, task, model, teacher, new_keys = load_training_inputs(recipe, trained_head=hook.trained_head)
    hook.check(recipe)
    pruner = None if recipe.pruning.method == "none" else Pruner(model, recipe.pruning)
    hook.prepare(model, pruner, recipe)
    out = claim_output_dir(recipe)

    compute_loss = task_objective(task, recipe.distill)

    # evaluation covers whole splits (cap them with data.max_eval_samples), not train.eval_batches
    eval_batch = recipe.train.eval_batch_size()
    precompute_teacher_logits(recipe, task, teacher, eval_batch, tokenizer)
    hold_until = recipe.pruning.target_step if recipe.pruning.method == "gmp" else None
    job = TrainingJob(
        model=model, n_examples=len(task.train), make_batch=batch_maker(task.train, tokenizer, model),
        compute_loss=compute_loss, lr_at=lambda s: recipe.train.lr_at(s, hold_until), config=recipe.train,
        output_dir=out, seed=recipe.seed, teacher=teacher, pruner=pruner, resume=recipe.resume,
        evaluate=lambda m: evaluate_splits(task, m, scored_splits(task, with_test=False), eval_batch, tokenizer),
        description=f"{recipe.stage} {Path(recipe.model).name} on {recipe.data.task}",
        lengths=[len(ids) for ids in task.train["input_ids"]] if recipe.train.group_by_length else None,
    )
    head_metrics, head_tokens = {}, 0
    if recipe.head.steps and new_keys:  # linear probing before fine-tuning: the encoder meets a trained head
        head = fit_new_head(job, new_keys, recipe.head.steps, recipe.head.lr, "new task head")
        head_metrics, head_tokens = {f"head/{k}": v for k, v in head.metrics.items()}, head.tokens
    result = fit(job)
    metrics = {"step": result.step, **head_metrics, **result.metrics, "train_tokens": head_tokens + result.tokens}
    metrics.update(hook.finish(model, pruner, task, eval_batch, tokenizer))
    metrics["sparsity"] = sparsity_of_model(model, recipe)["overall"]
    extra_metrics, extra_meta = hook.extra(model)
    metrics.update(extra_metrics)
    write_model_dir(model, tokenizer, out, recipe.stage, recipe, metrics,
                    extra={"task": recipe.data.task, "head": head_name(task), **extra_meta}, save=hook.save)
    return out
