"""A model with a task's head: loaded from a pre-trained or fine-tuned checkpoint, its head created or
checked against the task's labels."""

from __future__ import annotations

import logging

from pruneofa.data.assets import resolve_model_path
from pruneofa.errors import UserError
from pruneofa.models import load_config, load_tokenizer

log = logging.getLogger(__name__)


def head_name(task) -> str:
    return task.auto_class.__name__.removeprefix("AutoModelFor")  # SequenceClassification, QuestionAnswering


def load_task_model(path: str, task, trust_remote_code: bool, role: str, trained_head: bool):
    """The model with the task's head. `trained_head` (teacher, eval): the head must come from the
    checkpoint; otherwise a missing head (an MLM checkpoint) is created for the task's labels."""
    return load_task_model_and_new_keys(path, task, trust_remote_code, role, trained_head)[0]


def load_task_model_and_new_keys(path: str, task, trust_remote_code: bool, role: str, trained_head: bool):
    """`load_task_model`, and the names of the tensors it created (the new head; BERT's pooler too
    when the checkpoint is an MLM one)."""
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
    mismatched = [str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or []]
    if mismatched:
        log.warning("'%s' had a head of another size: %s re-initialised for this task", path, ", ".join(mismatched))
    if trained_head:
        task.check_head(model, role, path)
    if getattr(model.config, "pad_token_id", None) is None:  # GPT-2 style: the classifier finds the last token by it
        model.config.pad_token_id = load_tokenizer(path, trust_remote_code).pad_token_id
    return model, sorted(set(new + mismatched))


def check_positions(model, max_seq_len: int) -> None:
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit and max_seq_len > limit:
        raise UserError(f"data.max_seq_len={max_seq_len} exceeds the model's {limit} positions",
                        f"use data.max_seq_len<={limit}")
