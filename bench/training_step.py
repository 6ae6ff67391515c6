"""What the training-step benchmarks here share: their options, one masked-LM batch of the offline default,
the demo's prune objective, and interleaved timing of whole steps (objective, backward, fused AdamW)."""

from __future__ import annotations

import argparse
import functools
import random
from collections.abc import Callable

import torch
from transformers import AutoTokenizer, DataCollatorForLanguageModeling

from pruneofa.bench.timing import interleaved
from pruneofa.config.loader import text_values_parsed
from pruneofa.data.assets import asset_path
from pruneofa.distill import DistillConfig
from pruneofa.pipeline.runner import load_pipeline, resolve_step
from pruneofa.stages.registry import load_recipe
from pruneofa.train.performance import adamw


def demo_prune_distill() -> DistillConfig:
    """The demo's prune objective as shipped: its prune step's recipe, resolved as the pipeline resolves it
    (KD on the masked tokens, the sentence and relational terms on clean spans)."""
    pipeline, _ = load_pipeline("demo")
    step = pipeline.steps["prune"]
    values = text_values_parsed(resolve_step(pipeline, "prune", quick=False))
    return load_recipe(step.stage, step.recipe, values).distill


DEMO_DISTILL = demo_prune_distill()


def step_arguments(description: str, batch_size: int, steps: int, warmup: int) -> argparse.ArgumentParser:
    """The options every training-step benchmark here takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--json")
    return parser


def offline_mlm_batch(batch_size: int, seq_len: int) -> tuple[str, dict]:
    """The offline default model's path and one masked-LM batch of random tokens (seeded)."""
    torch.manual_seed(0)
    path = asset_path("offline/minilm-l6")
    collate = DataCollatorForLanguageModeling(AutoTokenizer.from_pretrained(path), mlm_probability=0.15)
    ids = torch.randint(1000, 29000, (batch_size, seq_len))
    return path, dict(collate([{"input_ids": row} for row in ids]))


def time_objective_steps(settings: dict[str, tuple[torch.nn.Module, Callable]], teacher: torch.nn.Module,
                         batch: dict, steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of one training step per setting (name -> (student, `compute_loss` as `fit` takes it)), each round
    stepping every setting once in a new seeded order (`interleaved`), so machine noise hits them alike. Settings
    that share a student share its optimizer, as one run would."""
    optimizers = {id(student): adamw([{"params": list(student.parameters())}], 1e-5, torch.device("cpu"))
                  for student, _ in settings.values()}

    def step(name: str) -> None:
        student, objective = settings[name]
        objective(student, teacher, batch)["loss"].backward()
        optimizers[id(student)].step()
        optimizers[id(student)].zero_grad(set_to_none=True)

    return interleaved({name: functools.partial(step, name) for name in settings}, steps, warmup, random.Random(0))
