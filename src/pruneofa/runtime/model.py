"""`load()`: a transformers model (or a saved one) converted to an engine, callable like the original."""

from __future__ import annotations

import copy
import gc
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from pruneofa.errors import UserError
from pruneofa.modeldir import SentencePooling
from pruneofa.runtime.build import kernels_available
from pruneofa.runtime.encode import SentenceEncoder, pooling_of
from pruneofa.runtime.engines import ENGINES, SPARSE_ENGINES, ConversionReport, convert
from pruneofa.runtime.fast_path import BertFastPath


def default_threads() -> int:
    """CPUs this process may run on, capped by torch's own setting (which follows OMP_NUM_THREADS)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(available, torch.get_num_threads()))


class RuntimeModel:
    """The converted model; calling it runs the model's own forward under `torch.no_grad()`
    (with Python's cyclic garbage collector paused for the duration of the call).

    `inference_mode` is avoided on purpose: it is not needed by the kernels and breaks sparse
    tensors elsewhere. Attributes not found here are looked up on the wrapped model (`config`, ...).
    """

    def __init__(self, model: nn.Module, report: ConversionReport, source_dir: str | Path | None = None):
        self.model = model
        self.report = report
        self.fast_path = BertFastPath.build(model)  # None: always transformers' forward
        self.source_dir = Path(source_dir) if source_dir is not None else None  # tokenizer and pooling for encode
        self.sentence_encoder: SentenceEncoder | None = None  # built by the first encode

    @property
    def engine(self) -> str:
        return self.report.engine

    @property
    def threads(self) -> int:
        return self.report.threads

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        def forward():
            out = self.fast_path(args, kwargs) if self.fast_path is not None else None
            return out if out is not None else self.model(*args, **kwargs)

        return _without_gc_or_grad(forward)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """transformers' own `generate` (its KV cache, causal masks, decoding strategies) on the converted
        model: every Linear (GPT-2's Conv1D too) of each prefill and per-token step runs on this engine."""
        can_generate = getattr(self.model, "can_generate", None)
        if can_generate is None or not can_generate():
            raise UserError(f"{type(self.model).__name__} cannot generate text",
                            "load a causal LM with its head (e.g. GPT2LMHeadModel), not an encoder")
        return _without_gc_or_grad(lambda: self.model.generate(*args, **kwargs))

    def encode(self, sentences: str | list[str], batch_size: int = 32, *, tokenizer: Any = None,
               pooling: SentencePooling | None = None) -> torch.Tensor:
        """Sentence embeddings [N, hidden] (one sentence: [hidden]) from the base model's token states,
        pooled as the model directory's sentence-transformers configuration says (see `encode.py`).
        `tokenizer` and `pooling` default to those of the directory the model was loaded from; a model
        passed as an object needs its tokenizer (its pooling defaults to the mean, unnormalized).
        They are fixed by the first call."""
        if self.sentence_encoder is None:
            if tokenizer is None:
                if self.source_dir is None:
                    raise ValueError("this model was passed as an object: pass encode(..., tokenizer=...)")
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.source_dir)
            self.sentence_encoder = SentenceEncoder(self.model, tokenizer, pooling or pooling_of(self.source_dir))
        one = isinstance(sentences, str)
        embeddings = _without_gc_or_grad(lambda: self.sentence_encoder([sentences] if one else list(sentences),
                                                                      batch_size))
        return embeddings[0] if one else embeddings

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "report", "fast_path", "source_dir", "sentence_encoder"):  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"RuntimeModel({self.report.summary()})"


def load(path_or_model: str | Path | nn.Module, engine: str = "auto", threads: int | None = None,
         copy_model: bool = True, sparse_threshold: float | None = None, int8_attention: bool = True,
         choose_layout: str = "table", measure_tokens: int = 128) -> RuntimeModel:
    """Load a model directory (plain, compact or compressed; or take a model object) and convert it to `engine`.

    threads: for the sparse kernels (default: `default_threads()`); PyTorch's own ops keep
    torch's setting. copy_model: convert a deep copy of a passed model (the default) rather than
    the model itself. sparse_threshold: per-layer choice of the sparse engines, see
    `engines.convert` (default: the measured break-even sparsities). int8_attention: with
    "sparse-int8", also run the attention products (QK^T, PV) in int8; False keeps them fp32.
    choose_layout: "table" (default) or "measure": with "sparse-int8", time each sparse enough Linear's two
    int8 layouts in whole forwards of `measure_tokens` tokens at load and keep the faster (`layout_choice.py`;
    ~8 s for BERT-Base on 2 cores).
    """
    if engine not in ("auto", *ENGINES):
        raise ValueError(f"unknown engine {engine!r}; choose one of auto, {', '.join(ENGINES)}")
    if isinstance(path_or_model, nn.Module):
        model = copy.deepcopy(path_or_model) if copy_model else path_or_model
    else:
        from pruneofa.modeldir import kind_of, load_compressed, load_plain  # the class named in config.json

        model = load_compressed(path_or_model) if kind_of(path_or_model) == "compressed" else load_plain(path_or_model)
    model.eval()
    threads = threads or default_threads()
    if engine == "auto":
        engine = "sparse" if kernels_available() else "torch"
    elif engine in SPARSE_ENGINES and not kernels_available():
        fallback = "torch-int8" if engine == "sparse-int8" else "torch"
        warnings.warn(f"sparse kernels unavailable; engine {engine!r} falls back to {fallback!r}", RuntimeWarning,
                      stacklevel=2)
        engine = fallback
    report = convert(model, engine, threads, sparse_threshold, int8_attention, choose_layout, measure_tokens)
    gc.collect()  # start from a clean heap: the conversion leaves garbage a first call would pay for
    return RuntimeModel(model, report, None if isinstance(path_or_model, nn.Module) else path_or_model)


def _without_gc_or_grad(call: Callable[[], Any]) -> Any:
    # The cyclic garbage collector is paused for the call: a forward allocates hundreds of
    # Python objects, enough to trigger collections that cost ~5% of a small sparse model's
    # latency. Nothing cyclic is leaked: the collector runs again as soon as it is re-enabled.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.no_grad():
            return call()
    finally:
        if gc_was_enabled:
            gc.enable()
