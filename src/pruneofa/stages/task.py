"""Stage 3 of Prune OFA, downstream tasks: `finetune`, `transfer` and `eval`.

(Over 300 lines: the task adapters, the KD variants and the eval recipes are to move out, issue #13.)

finetune and transfer are one code path (`run_task_stage`) with different recipe defaults:
  finetune  dense fine-tuning (the task teacher, the dense baseline); with pruning.method=gmp it is
            downstream-only pruning (paper Table 3), with teacher=PATH it distills;
  transfer  the sparse pre-trained model's zeros are locked (pruning.method=lock: mask = weight != 0)
            while the non-zeros and the new task head train, with KD from the dense task teacher.
            Layers the checkpoint lacks are new and dense, and lock keeps them so: the head, and BERT's
            pooler when starting from an MLM-only checkpoint (it then lowers the reported sparsity a little).
Tasks are sequence classification (single/pair, any number of labels, regression) and extractive
QA; `pruneofa.tasks` loads and scores them, this module trains and evaluates models on them.
"""

from __future__ import annotations

import inspect as pyinspect
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, DataCollatorWithPadding, set_seed

from pruneofa.stages.recipes import TaskRecipe
from pruneofa.data.assets import resolve_model_path
from pruneofa.distill import (
    DistillConfig,
    applicable_config,
    distillation_loss,
    kd_divergence,
    prepare_for_distillation,
    representation_outputs,
    with_representation_terms,
)
from pruneofa.errors import UserError
from pruneofa.inspect import sparsity_of_model
from pruneofa.models import check_same_vocab, load_config, load_tokenizer
from pruneofa.sparsity.pruner import Pruner
from pruneofa.stages.output import claim_output_dir, write_model_dir
from pruneofa.tasks import (
    EVAL_ONLY_COLUMNS,
    TaskDataConfig,
    is_qa_task,
    load_qa,
    load_task,
    logits_to_predictions,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    qa_references,
    task_metrics,
    tokenize_task,
)
from pruneofa.train.loop import TrainingJob, fit

log = logging.getLogger(__name__)
TARGETS = ("labels", "start_positions", "end_positions")  # what the teacher must not see


# --- tasks: data, model head, KD term and scoring of each kind -----------------------------------
class ClassificationTask:
    """Sequence classification or regression; each split tokenized unpadded (padded per batch)."""

    auto_class = AutoModelForSequenceClassification

    def __init__(self, cfg: TaskDataConfig, tokenizer, with_train: bool):
        self.cfg, self.data = cfg, load_task(cfg)
        if not with_train:  # eval needs no tokenized training set (MNLI's is 393k pairs)
            self.data.splits.pop("train")
        encoded = tokenize_task(self.data, tokenizer, cfg.max_seq_len)
        self.train = encoded.get("train")
        self.eval_sets = {name: encoded[name] for name in self.data.eval_split_names}
        self.test = encoded["test"] if "test" in encoded and "labels" in encoded["test"].column_names else None

    def head_kwargs(self) -> dict[str, Any]:
        if self.data.is_regression:
            return {"num_labels": 1, "problem_type": "regression"}
        names = self.data.label_names
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}, "problem_type": "single_label_classification"}

    def check_head(self, model, role: str, path: str) -> None:
        """A trained head must predict exactly this task's labels, in this order."""
        names = self.data.label_names  # None: regression
        have = [model.config.id2label[i] for i in range(model.config.num_labels)]
        unnamed = all(name == f"LABEL_{i}" for i, name in enumerate(have))  # a head saved without label names
        if len(have) != self.data.num_labels or (names and not unnamed and have != names):
            raise UserError(f"{role} '{path}' predicts labels {have}, the task has "
                            f"{names if names else 'one regression target'}",
                            f"use a {role} fine-tuned on this task (same labels in the same order)")

    def kd_loss(self, out_s, out_t, cfg: DistillConfig, mask) -> dict[str, torch.Tensor]:
        if not self.data.is_regression:
            return distillation_loss(out_s, out_t, cfg, mask)  # KD: one distribution per example
        return combine_kd(out_s, out_t, cfg, mask, regression_kd)

    def score(self, model, split: str, batch_size: int, tokenizer) -> dict[str, float]:
        dataset = self.test if split == "test" else self.eval_sets[split]
        logits = forward_all(model, dataset, batch_size, tokenizer, ("logits",))["logits"]
        preds = logits_to_predictions(logits, self.data.is_regression)
        return task_metrics(self.data.name, preds, np.asarray(dataset["labels"]), is_regression=self.data.is_regression)


class QATask:
    """Extractive QA: contexts cut into windows of max_seq_len sharing doc_stride tokens."""

    auto_class = AutoModelForQuestionAnswering

    def __init__(self, cfg: TaskDataConfig, tokenizer, with_train: bool):
        self.cfg, splits = cfg, load_qa(cfg)
        args = {"tokenizer": tokenizer, "max_seq_len": cfg.max_seq_len, "doc_stride": cfg.doc_stride}

        def windows(split: str, prepare: Callable):
            ds = splits[split]
            return ds.map(prepare, batched=True, remove_columns=ds.column_names, fn_kwargs=args, desc=f"windows {split}")

        self.train = windows("train", prepare_train_features) if with_train and "train" in splits else None
        self.examples = {s: splits[s] for s in ("validation", "test") if s in splits}
        # a test file may hold bare questions: scored only if some have gold answers
        if "test" in self.examples and not any(a["text"] for a in self.examples["test"]["answers"]):
            del self.examples["test"]
        self.features = {s: windows(s, prepare_eval_features) for s in self.examples}
        self.eval_sets = {"validation": self.features["validation"]}
        self.test = self.features.get("test")

    def head_kwargs(self) -> dict[str, Any]:
        return {}

    def check_head(self, model, role: str, path: str) -> None:
        pass  # a span head has no labels to disagree on

    def kd_loss(self, out_s, out_t, cfg: DistillConfig, mask) -> dict[str, torch.Tensor]:
        return combine_kd(out_s, out_t, cfg, mask, span_kd)

    def score(self, model, split: str, batch_size: int, tokenizer) -> dict[str, float]:
        features, examples = self.features[split], self.examples[split]
        out = forward_all(model, features.remove_columns(list(EVAL_ONLY_COLUMNS)), batch_size, tokenizer,
                          ("start_logits", "end_logits"))
        answers = postprocess_qa_predictions(examples, features, out["start_logits"], out["end_logits"],
                                             self.cfg.n_best, self.cfg.max_answer_len, self.cfg.with_negative)
        return task_metrics(self.cfg.task, answers, qa_references(examples))


def load_task_data(cfg: TaskDataConfig, tokenizer, with_train: bool = True) -> ClassificationTask | QATask:
    return (QATask if is_qa_task(cfg.task) else ClassificationTask)(cfg, tokenizer, with_train)


# --- KD for heads that `distillation_loss` does not cover ----------------------------------------
def span_kd(out_s, out_t, temperature: float) -> torch.Tensor:
    """QA: the mean of the start- and end-position KD (each T²·KL over a window's tokens)."""
    return 0.5 * (kd_divergence(out_s.start_logits, out_t.start_logits, temperature)
                  + kd_divergence(out_s.end_logits, out_t.end_logits, temperature))


def regression_kd(out_s, out_t, temperature: float) -> torch.Tensor:
    """Regression: one output has no distribution to soften (its KL is 0), so match the teacher's value."""
    return F.mse_loss(out_s.logits.float(), out_t.logits.float())


def combine_kd(out_s, out_t, cfg: DistillConfig, mask, kd_term: Callable) -> dict[str, torch.Tensor]:
    """`distillation_loss` with another KD term: α_ce·CE + α_kd·KD [+ the representation terms]."""
    cfg = applicable_config(cfg, out_t is not None)
    parts = {"loss": cfg.alpha_ce * out_s.loss, "ce": out_s.loss}
    if cfg.alpha_kd > 0:
        kd = kd_term(out_s, out_t, cfg.temperature)
        parts.update(loss=parts["loss"] + cfg.alpha_kd * kd, kd=kd)
    return with_representation_terms(parts, out_s, out_t, cfg, mask)


# --- models and batches --------------------------------------------------------------------------
def head_name(task) -> str:
    return task.auto_class.__name__.removeprefix("AutoModelFor")  # SequenceClassification, QuestionAnswering


def load_task_model(path: str, task, trust_remote_code: bool, role: str, trained_head: bool):
    """The model with the task's head. `trained_head` (teacher, eval): the head must come from the
    checkpoint; otherwise a missing head (an MLM checkpoint) is created for the task's labels."""
    load_config(path, trust_remote_code)  # clear errors for missing paths and non-model dirs
    # a student fine-tuned on another task (e.g. MNLI before RTE) gets a new head of the right size
    kwargs = {} if trained_head else {**task.head_kwargs(), "ignore_mismatched_sizes": True}
    try:
        model, info = task.auto_class.from_pretrained(resolve_model_path(path), trust_remote_code=trust_remote_code,
                                                      output_loading_info=True, **kwargs)
    except Exception as err:  # noqa: BLE001 - safetensors, torch and transformers each raise their own types
        raise UserError(f"cannot load {role} '{path}' with a {head_name(task)} head "
                        f"({type(err).__name__}: {str(err).strip().splitlines()[0]})",
                        "pass a pre-trained model, or one fine-tuned on this task with the same labels") from None
    new = sorted(info.get("missing_keys") or [])
    if trained_head and new:
        raise UserError(f"{role} '{path}' has no trained task head ({new[0]} would be initialised at random)",
                        "use a model written by pruneofa finetune/transfer for this task")
    if new:
        log.info("created %d new task-head tensors (e.g. %s)", len(new), new[0])
    if info.get("mismatched_keys"):
        log.warning("'%s' had a head of another size: %s re-initialised for this task", path,
                    ", ".join(str(k[0] if isinstance(k, tuple) else k) for k in info["mismatched_keys"]))
    if trained_head:
        task.check_head(model, role, path)
    if getattr(model.config, "pad_token_id", None) is None:  # GPT-2 style: the classifier finds the last token by it
        model.config.pad_token_id = load_tokenizer(path, trust_remote_code).pad_token_id
    return model


def check_positions(model, max_seq_len: int) -> None:
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit and max_seq_len > limit:
        raise UserError(f"data.max_seq_len={max_seq_len} exceeds the model's {limit} positions",
                        f"use data.max_seq_len<={limit}")


def batch_maker(dataset, tokenizer, model) -> Callable[[list[int]], dict[str, torch.Tensor]]:
    """indices -> padded tensors of the columns the model's forward takes (DistilBERT: no token_type_ids)."""
    accepted = set(pyinspect.signature(model.forward).parameters)
    columns = [c for c in dataset.column_names if c in accepted]
    view, collator = dataset.select_columns(columns), DataCollatorWithPadding(tokenizer)

    def make_batch(indices: list[int]) -> dict[str, torch.Tensor]:
        rows = view[indices]
        return dict(collator([dict(zip(rows, values)) for values in zip(*rows.values())]))

    return make_batch


@torch.no_grad()
def forward_all(model, dataset, batch_size: int, tokenizer, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Run `model` over every row of `dataset` in order; the named outputs, concatenated."""
    was_training = model.training
    model.eval()
    device = getattr(model, "device", None) or next(model.parameters()).device
    make_batch = batch_maker(dataset, tokenizer, model)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, len(dataset), batch_size):
        batch = make_batch(list(range(start, min(start + batch_size, len(dataset)))))
        out = model(**{k: v.to(device) for k, v in batch.items() if k not in TARGETS})
        for name in outputs:
            chunks[name].append(out[name].float().cpu().numpy())
    model.train(was_training)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def evaluate_splits(task, model, splits: list[str], batch_size: int, tokenizer) -> dict[str, float]:
    """{"<split>/<metric>": value} over `splits`."""
    return {f"{split}/{k}": v for split in splits for k, v in task.score(model, split, batch_size, tokenizer).items()}


def scored_splits(task, with_test: bool) -> list[str]:
    return list(task.eval_sets) + (["test"] if with_test and task.test is not None else [])


# --- the stages ----------------------------------------------------------------------------------
def task_objective(task: Any, distill: DistillConfig) -> Callable:
    """`compute_loss` for `fit`: the student sees the batch with its targets (its own loss), the
    frozen teacher sees it without them; `task.kd_loss` combines the two. With α_kd = 0 the
    teacher's head serves no term and only its base model runs. The models must have been through
    `prepare_for_distillation` (`load_training_inputs` does it)."""
    outputs = representation_outputs(distill)

    def compute_loss(student, frozen_teacher, batch):
        out_s = student(**batch, **outputs)
        out_t = None
        if frozen_teacher is not None and distill.uses_teacher:
            teacher = frozen_teacher if distill.alpha_kd > 0 else frozen_teacher.base_model
            with torch.no_grad():
                out_t = teacher(**{k: v for k, v in batch.items() if k not in TARGETS}, **outputs)
        return task.kd_loss(out_s, out_t, distill, batch.get("attention_mask"))

    return compute_loss


def load_training_inputs(recipe: TaskRecipe, trained_head: bool) -> tuple[Any, Any, Any, Any]:
    """(tokenizer, task, model, teacher) of a task-training recipe, every input checked before the
    output dir is claimed. `trained_head`: the model must already carry this task's head."""
    tokenizer = load_tokenizer(recipe.model, recipe.trust_remote_code)
    task = load_task_data(recipe.data, tokenizer)
    if task.train is None:
        raise UserError(f"data.task={recipe.data.task} has no training split", "set data.train_file")
    if len(task.train) < recipe.train.batch_size:
        raise UserError(f"only {len(task.train)} training examples for train.batch_size={recipe.train.batch_size}",
                        "add data or lower train.batch_size")
    model = load_task_model(recipe.model, task, recipe.trust_remote_code, "model", trained_head=trained_head)
    check_positions(model, recipe.data.max_seq_len)
    teacher = None
    if recipe.distill.uses_teacher:
        teacher = load_task_model(recipe.teacher, task, recipe.trust_remote_code, "teacher", trained_head=True)
        check_same_vocab(model, teacher)
        prepare_for_distillation(model, teacher, recipe.distill)
    return tokenizer, task, model, teacher


def run_task_stage(recipe: TaskRecipe) -> Path:
    set_seed(recipe.seed)  # before any model is built: a new task head is initialised from this seed
    tokenizer, task, model, teacher = load_training_inputs(recipe, trained_head=False)
    distill = recipe.distill
    pruner = None if recipe.pruning.method == "none" else Pruner(model, recipe.pruning)
    if recipe.pruning.method == "lock" and pruner.overall_sparsity() == 0:
        log.warning("pruning.method=lock on '%s', which has no zeros in its prunable layers: it stays dense", recipe.model)
    out = claim_output_dir(recipe)

    compute_loss = task_objective(task, distill)

    # evaluation covers whole splits (cap them with data.max_eval_samples), not train.eval_batches
    eval_batch = max(1, recipe.train.batch_size // recipe.train.grad_accum)
    hold_until = recipe.pruning.target_step if recipe.pruning.method == "gmp" else None
    job = TrainingJob(
        model=model, n_examples=len(task.train), make_batch=batch_maker(task.train, tokenizer, model),
        compute_loss=compute_loss, lr_at=lambda s: recipe.train.lr_at(s, hold_until), config=recipe.train,
        output_dir=out, seed=recipe.seed, teacher=teacher, pruner=pruner, resume=recipe.resume,
        evaluate=lambda m: evaluate_splits(task, m, scored_splits(task, with_test=False), eval_batch, tokenizer),
        description=f"{recipe.stage} {Path(recipe.model).name} on {recipe.data.task}",
    )
    result = fit(job)
    if pruner is not None:
        pruner.finalize()
    metrics = {"step": result.step, **result.metrics, "train_tokens": result.tokens}
    if task.test is not None:  # the test split is scored once, at the end, never during training
        metrics.update(evaluate_splits(task, model, ["test"], eval_batch, tokenizer))
    metrics["sparsity"] = sparsity_of_model(model, recipe)["overall"]
    write_model_dir(model, tokenizer, out, recipe.stage, recipe, metrics,
                    extra={"task": recipe.data.task, "head": head_name(task)})
    return out
