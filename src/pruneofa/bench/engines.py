"""The engines `pruneofa bench` compares, each loaded from its own artifact (artifacts.py).

    torch        dense fp32 PyTorch eager, transformers' forward: the reference of every ratio
    torch-int8   PyTorch dynamic int8 (fbgemm), transformers' forward    (pruneofa.runtime)
    dense        dense fp32 in pruneofa.runtime's fused encoder
    dense-int8   dense dynamic int8 in the fused encoder
    sparse       pruneofa.runtime sparse fp32 kernels, from the compressed fp32 checkpoint
    sparse-int8  pruneofa.runtime sparse int8 kernels, from the compressed int8 checkpoint
    sparse-int8-measured   the same, each Linear's int8 layout (sparse or dense) timed at load on this machine
                           instead of read from the break-even table (opt-in: name it in --engines)
    ort          onnxruntime fp32 (CPU provider, all graph optimizations, no spinning between calls)
    ort-int8     onnxruntime int8 by its dynamic quantization (any model)
    ort-qdq      onnxruntime int8 QDQ with the QAT scales (QAT dirs only)

A loaded engine is bound to one batch of inputs and returns a zero-argument call, so that the
timing loop measures the forward only; every call returns the model's primary output (`logits`,
else `last_hidden_state`: what the ONNX export returns too).

With `--decode` (decode.py) a causal LM keeps its KV cache between the calls of one engine.

With `--encode` the engines are those that serve sentence embeddings (ENCODE_ENGINES): torch and the
runtime's engines through `RuntimeModel.encode`, and sentence-transformers' own `encode` (dense fp32,
the `[st]` extra). A call then takes a batch of sentences and returns their pooled embeddings,
tokenization included, as a user calls it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

REFERENCE = "torch"


@dataclass(frozen=True)
class EngineSpec:
    name: str
    artifact: str  # a kind ArtifactStore.get makes: hf, compressed-fp32|int8, onnx-fp32, onnx-int8-dynamic, onnx-qdq
    precision: str  # "fp32" | "int8": chooses the accuracy tolerance
    description: str


_SPECS = [
    EngineSpec("torch", "hf", "fp32", "dense fp32 PyTorch eager (transformers' forward)"),
    EngineSpec("torch-int8", "hf", "int8", "PyTorch dynamic int8 (fbgemm), transformers' forward"),
    EngineSpec("dense", "hf", "fp32", "dense fp32, pruneofa.runtime fused encoder"),
    EngineSpec("dense-int8", "hf", "int8", "dense dynamic int8, pruneofa.runtime fused encoder"),
    EngineSpec("sparse", "compressed-fp32", "fp32", "pruneofa.runtime sparse fp32 kernels"),
    EngineSpec("sparse-int8", "compressed-int8", "int8",
               "pruneofa.runtime sparse int8 kernels (+ int8 attention with AVX-512 VNNI)"),
    EngineSpec("sparse-int8-measured", "compressed-int8", "int8",
               "sparse-int8, each Linear's int8 layout timed at load (runtime.load(choose_layout='measure'))"),
    EngineSpec("ort", "onnx-fp32", "fp32", "onnxruntime fp32"),
    EngineSpec("ort-int8", "onnx-int8-dynamic", "int8", "onnxruntime dynamic int8 (quantize_dynamic)"),
    EngineSpec("ort-qdq", "onnx-qdq", "int8", "onnxruntime int8 QDQ with the QAT scales"),
]
ENGINES: dict[str, EngineSpec] = {spec.name: spec for spec in _SPECS}
RUNTIME_ENGINES = ("torch-int8", "dense", "dense-int8", "sparse", "sparse-int8")
MEASURED = "sparse-int8-measured"
OPT_IN = (MEASURED,)  # run only when named: its load times the model (a few seconds), which a default run need not
SENTENCE_TRANSFORMERS = "sentence-transformers"
ENCODE_ENGINES: dict[str, EngineSpec] = {
    **{name: ENGINES[name] for name in (REFERENCE, *RUNTIME_ENGINES)},
    MEASURED: ENGINES[MEASURED],
    SENTENCE_TRANSFORMERS: EngineSpec(SENTENCE_TRANSFORMERS, "hf", "fp32",
                                      "sentence-transformers' encode, dense fp32 PyTorch (the [st] extra)"),
}


def spec_of(name: str) -> EngineSpec:
    return ENGINES.get(name) or ENCODE_ENGINES[name]


def unavailable_reason(name: str) -> str | None:
    """Why `name` cannot run on this machine at all (before any artifact is made), or None."""
    from pruneofa.runtime.build import kernels_available
    from pruneofa.runtime.dense_int8 import int8_backend_available

    if name == SENTENCE_TRANSFORMERS:
        import importlib.util

        return None if importlib.util.find_spec("sentence_transformers") else \
            "sentence-transformers is not installed (pip install 'pruneofa[st]')"
    if name in ("sparse", "sparse-int8", MEASURED) and not kernels_available():
        return "the sparse C++ kernels did not build on this machine (no working g++?)"
    if name == MEASURED:
        from pruneofa.runtime.kernels import has_native_int8

        return None if has_native_int8() else "no native int8 kernels here (neither VNNI nor AVX2): one layout only"
    if ENGINES[name].precision == "int8" and name in RUNTIME_ENGINES and not int8_backend_available():
        return "this torch build has no fbgemm/x86 quantized backend"
    return None


def primary_output(outputs: Any) -> torch.Tensor:
    return outputs["logits"] if "logits" in outputs else outputs["last_hidden_state"]


class TorchEngine:
    """A transformers model (plain, or converted by pruneofa.runtime) called with keyword inputs."""

    def __init__(self, model: Any, forward: Callable[..., Any]):
        self.model = model
        self.accepted = set(inspect.signature(forward).parameters)  # e.g. DistilBERT takes no token types

    def bind(self, inputs: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
        kwargs = {k: v for k, v in inputs.items() if k in self.accepted}

        def call() -> torch.Tensor:
            with torch.no_grad():
                return primary_output(self.model(**kwargs))

        return call


class OrtEngine:
    def __init__(self, onnx_file: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's own thread pool keeps spinning after a call; interleaved with the other engines
        # (torch's OpenMP pool) on few cores that would steal the next engine's CPU, so it sleeps instead
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def bind(self, inputs: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
        feed = {name: inputs[name].numpy() for name in self.input_names}
        return lambda: torch.from_numpy(self.session.run(None, feed)[0])


def load_engine(name: str, artifact_path: Path, threads: int, measure_tokens: int = 128) -> TorchEngine | OrtEngine:
    """Load engine `name` from its artifact (see artifacts.py), using `threads` threads. measure_tokens: the input
    length at which "sparse-int8-measured" times its layouts (the benchmark's own)."""
    import pruneofa.runtime as rt
    from pruneofa.modeldir import load_compressed, load_plain

    if name.startswith("ort"):
        return OrtEngine(artifact_path, threads)
    if name == REFERENCE:
        model: nn.Module = load_plain(artifact_path)
        return TorchEngine(model, model.forward)
    if name in ("sparse", "sparse-int8", MEASURED):
        runtime = rt.load(load_compressed(artifact_path), threads=threads, copy_model=False,
                          **_runtime_options(name, measure_tokens))
    else:
        runtime = rt.load(artifact_path, engine=name, threads=threads)
    return TorchEngine(runtime, runtime.model.forward)


class EncodeEngine:
    """An engine serving sentence embeddings: bound to a batch of sentences, each call encodes them."""

    def __init__(self, model: Any, encode: Callable[[list[str]], torch.Tensor]):
        self.model = model  # a pruneofa.runtime model (its conversion report is read) or a SentenceTransformer
        self.encode = encode

    def bind(self, sentences: list[str]) -> Callable[[], torch.Tensor]:
        return lambda: self.encode(sentences)


def _runtime_options(name: str, measure_tokens: int) -> dict[str, Any]:
    """`runtime.load`'s engine for bench engine `name`: MEASURED is "sparse-int8" with its layouts timed at load."""
    if name == MEASURED:
        return dict(engine="sparse-int8", choose_layout="measure", measure_tokens=measure_tokens)
    return dict(engine=name)


def load_encoder(name: str, artifact_path: Path, threads: int, measure_tokens: int = 128) -> EncodeEngine:
    """Load ENCODE_ENGINES' `name` from its artifact, a model directory with its tokenizer and pooling."""
    if name == SENTENCE_TRANSFORMERS:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(artifact_path), device="cpu")
        return EncodeEngine(st, lambda s: st.encode(s, batch_size=len(s), convert_to_tensor=True))
    import pruneofa.runtime as rt

    # "torch": transformers' forward
    runtime = rt.load(artifact_path, threads=threads, **_runtime_options(name, measure_tokens))
    return EncodeEngine(runtime, lambda s: runtime.encode(s, batch_size=len(s)))
