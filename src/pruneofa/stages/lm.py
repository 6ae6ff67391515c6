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
import sys
from pathlib import Path

import torch
from transformers import DataCollatorForLanguageModeling, set_seed

from pruneofa.stages.recipes import PruneRecipe, TeacherRecipe
from pruneofa.data.block_cache import BlockArray, CorpusCache, prepare_blocks
from pruneofa.deferred_logits import forward_deferring_logits
from pruneofa.distill import (
    CE_ONLY,
    DistillConfig,
    applicable_config,
    prepare_for_distillation,
    representation_outputs,
    run_teacher,
    span_sentence_terms,
    token_distillation_loss,
    with_representation_terms,
)
from pruneofa.errors import UserError
from pruneofa.models import check_same_vocab, is_causal_lm, load_lm, load_lm_and_new_keys, load_tokenizer
from pruneofa.sparsity.pruner import Pruner
from pruneofa.stages.output import claim_output_dir, write_model_dir
from pruneofa.train import distributed as D
from pruneofa.train.loop import TrainingJob, fit
from pruneofa.train.new_head import fit_new_head

log = logging.getLogger(__name__)
EVAL_SEED = 1234  # the validation masking is the same at every evaluation and in every run


def _collator(tokenizer, causal: bool, probability: float, seed: int | None = None) -> DataCollatorForLanguageModeling:
    return DataCollatorForLanguageModeling(tokenizer, mlm=not causal, mlm_probability=probability, seed=seed)


def _batch(collator, blocks: BlockArray | torch.Tensor, indices: list[int]) -> dict[str, torch.Tensor]:
    """The blocks `indices` (read from disk: only these rows), masked or shifted by the collator."""
    rows = blocks.rows(indices) if isinstance(blocks, BlockArray) else blocks[indices]
    batch = collator([{"input_ids": row} for row in rows])
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])  # packed blocks have no padding
    return dict(batch)


def lm_evaluator(tokenizer, causal: bool, recipe, blocks: BlockArray | torch.Tensor):
    """Validation LM loss and perplexity, on a fixed masking of the held-out blocks.

    The loss is transformers' LM loss (mean CE over the labelled tokens), computed as in training
    without building the [tokens, vocab] logits: at the end of a run, with the optimizer state
    alive, a full-vocabulary evaluation would otherwise set the run's peak memory.
    """
    batch_size = recipe.train.eval_batch_size()

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
    """`compute_loss` for `fit`: CE on the labelled tokens + KD on every non-padding token, plus the
    representation terms (`pruneofa.representation_kd`) when their weights are on.

    Neither model builds its [tokens, vocab] logits: both run without their output layer and
    `token_distillation_loss` computes CE and KD from the features entering it, a chunk of tokens
    at a time. The student runs without labels, as transformers' own LM loss would keep a
    full-vocabulary log-softmax for every token. With α_kd = 0 only the labelled tokens' logits are
    built, and the teacher runs without its LM head.
    """
    outputs = representation_outputs(distill)
    prepared = False

    def compute_loss(student, frozen_teacher, batch):
        nonlocal prepared
        if not prepared:  # once, on the first batch: the stage hands the models over only through fit
            if frozen_teacher is None and distill.uses_teacher:
                raise UserError("distill's teacher terms need the teacher, which this stage did not load",
                                "pass the frozen teacher to fit (run_lm_stage loads it when a teacher term is on)")
            prepare_for_distillation(student, frozen_teacher, distill)
            prepared = True
        config = applicable_config(distill, frozen_teacher is not None)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out_s, logits_s = forward_deferring_logits(student, **inputs, **outputs)
        out_t = logits_t = None
        if config.uses_teacher:
            with torch.no_grad():
                out_t, logits_t = run_teacher(frozen_teacher, config, **inputs)
        mask = batch["attention_mask"]
        parts = token_distillation_loss(logits_s, logits_t, batch["labels"], config, mask, causal)
        parts = with_representation_terms(parts, out_s, out_t, config, mask)
        if config.sentence_on_spans:
            terms = span_sentence_terms(student, frozen_teacher, batch, config)
            weights = {"sentence": config.alpha_sentence, "relation": config.alpha_relation}
            loss = parts["loss"] + sum(weights[name] * term for name, term in terms.items())
            parts = {**parts, "loss": loss, **{name: term.detach() for name, term in terms.items()}}
        return parts

    return compute_loss


def corpus_blocks(recipe: TeacherRecipe | PruneRecipe, tokenizer) -> CorpusCache:
    """The recipe's corpus as packed blocks on disk: the main process builds the cache (or checks the
    one there against its checksums) and prints where it is, then every process opens it."""
    seq_len = recipe.train.seq_len
    built = D.on_main(lambda: prepare_blocks(recipe.data, tokenizer, seq_len))
    if built is not None:
        print(built.summary(), file=sys.stderr, flush=True)
        return built
    return prepare_blocks(recipe.data, tokenizer, seq_len, verify_checksums=False)  # sizes and shapes only


def run_lm_stage(recipe: TeacherRecipe | PruneRecipe) -> Path:
    set_seed(recipe.seed)  # before any model is built: a new LM head is initialised from this seed
    pruning = isinstance(recipe, PruneRecipe)
    model, new_keys = load_lm_and_new_keys(recipe.model, recipe.trust_remote_code)
    tokenizer = load_tokenizer(recipe.model, recipe.trust_remote_code)
    max_len = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if max_len and recipe.train.seq_len > max_len:
        raise UserError(f"train.seq_len={recipe.train.seq_len} exceeds the model's {max_len} positions",
                        f"use train.seq_len<={max_len}")
    causal = is_causal_lm(model.config)
    teacher, pruner, distill = None, None, DistillConfig(alpha_ce=1.0, alpha_kd=0.0)
    if pruning:
        distill = recipe.distill
        if distill.uses_teacher:
            teacher = load_lm(recipe.teacher or recipe.model, recipe.trust_remote_code, role="teacher")
            check_same_vocab(model, teacher)
            prepare_for_distillation(model, teacher, distill)  # widths and heads checked before anything is written
        pruner = Pruner(model, recipe.pruning)
    cache = corpus_blocks(recipe, tokenizer)
    train_blocks, val_blocks = cache.train, cache.validation
    out = claim_output_dir(recipe)

    collator = _collator(tokenizer, causal, recipe.train.mlm_probability)
    compute_loss = lm_objective(distill, causal)
    evaluate = lm_evaluator(tokenizer, causal, recipe, val_blocks)
    job = TrainingJob(
        model=model, n_examples=len(train_blocks), make_batch=lambda idx: _batch(collator, train_blocks, idx),
        compute_loss=compute_loss, lr_at=lambda s: recipe.train.lr_at(s, recipe.pruning.target_step if pruning else None),
        config=recipe.train, output_dir=out, seed=recipe.seed, teacher=teacher, pruner=pruner, evaluate=evaluate,
        resume=recipe.resume, description=f"{recipe.stage} {Path(recipe.model).name}",
    )
    before, head_tokens = {}, 0
    if not pruning:  # the teacher's held-out perplexity before, after its new head alone, and at the end
        before = {f"initial/{k}": v for k, v in evaluate(model.eval()).items()}
        if recipe.head.steps and new_keys:
            head = fit_new_head(job, new_keys, recipe.head.steps, recipe.head.lr, "new LM head")
            before.update({f"head/{k}": v for k, v in head.metrics.items()})
            head_tokens = head.tokens
    result = fit(job)
    if pruner is not None:
        pruner.finalize()
    metrics = {"step": result.step, **before, **result.metrics, "train_tokens": head_tokens + result.tokens}
    write_model_dir(model, tokenizer, out, recipe.stage, recipe, metrics,
                    extra={"objective": "causal-lm" if causal else "masked-lm"})
    return out
