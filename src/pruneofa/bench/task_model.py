"""A task model served by any `pruneofa bench` engine, for `pruneofa eval MODEL_DIR engine=ENGINE`:
the task metric as the deployed engine computes it (onnxruntime int8 QDQ, the sparse int8 kernels, ...),
on the same data, batches and metric code as the PyTorch evaluation.

The engine loads from the same artifact the benchmark times (artifacts.py), so an accuracy and a
latency of one engine always describe one file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneofa.bench.artifacts import ArtifactStore, Unavailable, load_source
from pruneofa.bench.engines import ENGINES, load_engine, unavailable_reason
from pruneofa.errors import UserError


class EngineTaskModel(nn.Module):
    """Called like a transformers sequence classifier (keyword inputs -> {"logits": ...}). The engine's
    own `bind` passes on only the inputs it takes (a DistilBERT ONNX graph has no token_type_ids)."""

    def __init__(self, engine: Any, config: Any, work_dir: tempfile.TemporaryDirectory):
        super().__init__()
        self.engine, self.config, self._work_dir = engine, config, work_dir  # keeps the artifacts alive
        self.device = torch.device("cpu")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return {"logits": self.engine.bind({k: v for k, v in given.items() if v is not None})()}


def engine_task_model(model_dir: str, engine: str, threads: int | None = None) -> EngineTaskModel:
    """MODEL_DIR (finetune/transfer/quantize/compressed dir) loaded into `engine`."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine '{engine}'", f"use one of: {', '.join(ENGINES)}")
    if reason := unavailable_reason(engine):
        raise UserError(f"engine {engine} cannot run here: {reason}", "pick another engine")
    source = load_source(model_dir)
    if not hasattr(source.plain, "classifier") and "ForSequenceClassification" not in type(source.plain).__name__:
        raise UserError(f"engine={engine} evaluates sequence classifiers; '{model_dir}' is a "
                        f"{type(source.plain).__name__}", "evaluate it with engine=torch")
    work = tempfile.TemporaryDirectory(prefix="pruneofa-eval-")
    try:
        artifact = ArtifactStore(source, Path(work.name)).get(ENGINES[engine].artifact)
    except Unavailable as err:
        work.cleanup()
        raise UserError(f"engine {engine} cannot load '{model_dir}': {err}", "pick another engine") from None
    threads = threads or torch.get_num_threads()
    return EngineTaskModel(load_engine(engine, artifact.path, threads), source.plain.config, work)
