"""Stages 1 and 2 of Prune OFA, both language-model training on the pre-training corpus.

teacher: continue masked-LM (encoders) or causal-LM (decoders) training of a pre-trained model;
         a missing LM head is created and trained with the rest.
prune:   the student starts from the teacher and trains on the same objective with gradual
         magnitude pruning, KD from the frozen teacher on every non-padding token's logits, and
         learning-rate rewinding.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from transformers import DataCollatorForLanguageModeling

from pruneofa.config.schema import PruneRecipe, TeacherRecipe
from pruneofa.data.corpus import build_lm_blocks
from pruneofa.deferred_logits import forward_deferring_logits
from pruneofa.distill import CE_ONLY, DistillConfig, token_distillation_loss, with_hidden_term
from pruneofa.errors import UserError
from pruneofa.models import check_same_vocab, is_causal_lm, load_lm, load_tokenizer
from pruneofa.sparsity.pruner import Pruner
from pruneofa.stages.output import claim_output_dir, write_model_dir
from pruneofa.train.loop import TrainingJob, fit

log = logging.getLogger(__name__)
EVAL_SEED = 1234  # the validation masking is the same at every evaluation and in every run


def _collator(tokenizer, causal: bool, probability: float, seed: int | None = None) -> DataCollatorForLanguageModeling:
    return DataCollatorForLanguageModeling(tokenizer, mlm=not causal, mlm_probability=probability, seed=seed)


def _batch(collator, blocks: torch.Tensor, indices: list[int]) -> dict[str, torch.Tensor]:
    batch = collator([{"input_ids": blocks[i]} for i in indices])
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])  # packed blocks have no padding
    return dict(batch)


def lm_evaluator(tokenizer, causal: bool, recipe, blocks: torch.Tensor):
    """Validation LM loss and perplexity, on a fixed masking of the held-out blocks.

    The loss is transformers' LM loss (mean CE over the labelled tokens), computed as in training
    without building the [tokens, vocab] logits: at the end of a run, with the optimizer state
    alive, a full-vocabulary evaluation would otherwise set the run's peak memory.
    """
    batch_size = max(1, recipe.train.batch_size // recipe.train.grad_accum)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        if len(blocks) == 0:
            return {}
        collator = _collator(tokenizer, causal, recipe.train.mlm_probability, seed=EVAL_SEED)
        device = next(model.parameters()).device
        losses = []
        for start in range(0, min(len(blocks), batch_size * recipe.train.eval_batches), batch_size):
            batch = _batch(collator, blocks, list(range(start, min(start + batch_size, len(blocks)))))
            batch = {k: v.to(device) for k, v in batch.items()}
            _, logits = forward_deferring_logits(model, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            losses.append(token_distillation_loss(logits, None, batch["labels"], CE_ONLY, causal=causal)["loss"].item())
        loss = sum(losses) / len(losses)
        return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0))}

    return evaluate


def lm_objective(distill: DistillConfig, causal: bool):
    """`compute_loss` for `fit`: CE on the labelled tokens + KD on every non-padding token.

    Neither model builds its [tokens, vocab] logits: both run without their output layer and
    `token_distillation_loss` computes CE and KD from the features entering it, a chunk of tokens
    at a time. The student runs without labels, as transformers' own LM loss would keep a
    full-vocabulary log-softmax for every token.
    """
    hidden = distill.alpha_hidden > 0

    def compute_loss(student, frozen_teacher, batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out_s, logits_s = forward_deferring_logits(student, **inputs, output_hidden_states=hidden)
        out_t = logits_t = None
        if frozen_teacher is not None:
            with torch.no_grad():
                out_t, logits_t = forward_deferring_logits(frozen_teacher, **inputs, output_hidden_states=hidden)
        mask = batch["attention_mask"]
        parts = token_distillation_loss(logits_s, logits_t, batch["labels"], distill, mask, causal)
        return with_hidden_term(parts, out_s, out_t, distill, mask)

    return compute_loss


def run_lm_stage(recipe: TeacherRecipe | PruneRecipe) -> Path:
    pruning = isinstance(recipe, PruneRecipe)
    model = load_lm(recipe.model, recipe.trust_remote_code)
    tokenizer = load_tokenizer(recipe.model, recipe.trust_remote_code)
    max_len = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if max_len and recipe.train.seq_len > max_len:
        raise UserError(f"train.seq_len={recipe.train.seq_len} exceeds the model's {max_len} positions",
                        f"use train.seq_len<={max_len}")
    causal = is_causal_lm(model.config)
    teacher, pruner, distill = None, None, DistillConfig(alpha_ce=1.0, alpha_kd=0.0)
    if pruning:
        distill = recipe.distill
        if distill.alpha_kd > 0 or distill.alpha_hidden > 0:
            teacher = load_lm(recipe.teacher or recipe.model, recipe.trust_remote_code, role="teacher")
            check_same_vocab(model, teacher)
        pruner = Pruner(model, recipe.pruning)
    train_blocks, val_blocks = build_lm_blocks(recipe.data, tokenizer, recipe.train.seq_len, recipe.seed)
    log.info("%d training and %d validation blocks of %d tokens", len(train_blocks), len(val_blocks), recipe.train.seq_len)
    out = claim_output_dir(recipe)

    collator = _collator(tokenizer, causal, recipe.train.mlm_probability)
    compute_loss = lm_objective(distill, causal)

    hold_until = recipe.pruning.target_step if pruning else None
    job = TrainingJob(
        model=model, n_examples=len(train_blocks), make_batch=lambda idx: _batch(collator, train_blocks, idx),
        compute_loss=compute_loss, lr_at=lambda s: recipe.train.lr_at(s, hold_until), config=recipe.train,
        output_dir=out, seed=recipe.seed, teacher=teacher, pruner=pruner,
        evaluate=lm_evaluator(tokenizer, causal, recipe, val_blocks), resume=recipe.resume,
        description=f"{recipe.stage} {Path(recipe.model).name}",
    )
    result = fit(job)
    if pruner is not None:
        pruner.finalize()
    metrics = {"step": result.step, **result.metrics}
    write_model_dir(model, tokenizer, out, recipe.stage, recipe, metrics,
                    extra={"objective": "causal-lm" if causal else "masked-lm"})
    return out
