"""Turn a transformers model into one that runs on a given engine, by swapping child modules.

Engines (weights, precision, and which forward runs the encoder):
- "torch":       dense fp32, transformers' own forward (PyTorch eager): the reference.
- "torch-int8":  every Linear -> dense dynamic int8 (fbgemm), transformers' forward.
- "dense":       dense fp32 (MKL) in the fused encoder (`fused_encoder.py`).
- "dense-int8":  dense dynamic int8 (fbgemm) in the fused encoder: the int8 baseline that shares
                 everything but the matmuls with "sparse-int8", so the two isolate sparsity's share.
- "sparse":      Linear layers sparse enough to win -> fp32 sparse kernels; fused encoder.
- "sparse-int8": Linear layers sparse enough -> int8 sparse kernels, the rest the runtime's dense int8
                 kernel (the same int8 scheme, `formats` layout "dense"; fbgemm where the int8 kernels are
                 not SIMD: neither VNNI nor AVX2), so that a mixed or a compacted structured model runs
                 its whole encoder in one C++ call.
Nothing in transformers is patched: modules are replaced with `setattr` on their parent, so the
model keeps its forward, call signature and outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from pruneofa.runtime import kernels, layout_choice, policy
from pruneofa.runtime.dense_int8 import dynamic_int8_linear
from pruneofa.runtime.formats import MAX_IN_FEATURES
from pruneofa.runtime.fused_decoder import fuse_decoders
from pruneofa.runtime.fused_encoder import fuse_encoders, unfused_blocks
from pruneofa.runtime.layers import SparseInt8Linear, SparseLinear, set_child
from pruneofa.sparsity.masks import PRUNABLE_TYPES, is_transposed

ENGINES = ("torch", "torch-int8", "dense", "dense-int8", "sparse", "sparse-int8")
SPARSE_ENGINES = ("sparse", "sparse-int8")
INT8_ENGINES = ("torch-int8", "dense-int8", "sparse-int8")
FUSED_ENGINES = ("dense", "dense-int8", "sparse", "sparse-int8")
# choose_layout="measure" times both int8 layouts for every Linear at least this sparse: below it the quads lost
# to the dense int8 kernel on every CPU and shape measured (policy.py), so the table's choice stands
MEASURE_FLOOR = 0.3


@dataclass
class LayerChoice:
    name: str
    shape: tuple[int, int]  # (in_features, out_features)
    sparsity: float
    path: str  # "sparse" | "sparse-int8" | "dense" | "dense-int8" (fbgemm) | "dense-int8-native" (the runtime's kernel)
    fused_act: str | None = None


@dataclass
class ConversionReport:
    engine: str
    threads: int
    layers: list[LayerChoice] = field(default_factory=list)
    fused_encoders: int = 0
    fused_decoders: int = 0  # GPT-2 decoders on the direct path (`fused_decoder.py`)
    # transformer blocks left to transformers' forward (attention, norms, activations in PyTorch, each
    # Linear still on the engine's kernels), one line per family: "2 ModernBERT blocks: <why>"
    unfused: list[str] = field(default_factory=list)
    layout_timing: layout_choice.LayoutTiming | None = None  # what choose_layout="measure" timed

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.path] = counts.get(layer.path, 0) + 1
        parts = ", ".join(f"{n} {path}" for path, n in sorted(counts.items()))
        fused = f", {self.fused_encoders} fused encoder(s)" if self.fused_encoders else ""
        fused += f", {self.fused_decoders} direct GPT-2 decoder(s)" if self.fused_decoders else ""
        unfused = f"; PyTorch between the Linear kernels: {'; '.join(self.unfused)}" if self.unfused else ""
        timed = f"; {self.layout_timing.summary()}" if self.layout_timing else ""
        return (f"engine={self.engine} threads={self.threads}: {parts or 'Linear layers unchanged'}{fused}{unfused}"
                f"{timed}")


def as_linear(module: nn.Module) -> nn.Linear:
    """`module` as an nn.Linear: itself, or for GPT-2's Conv1D (y = x W + b, W stored [in, out]) a
    Linear holding W transposed, so that every engine packs one (out, in) layout."""
    if not is_transposed(module):
        return module
    n_in, n_out = module.weight.shape
    linear = nn.Linear(n_in, n_out, device="meta")
    linear.weight = nn.Parameter(module.weight.detach().t().contiguous(), requires_grad=False)
    linear.bias = nn.Parameter(module.bias.detach(), requires_grad=False)
    return linear


def _fusable_gelu(module: nn.Module) -> str | None:
    """The kernels' name for a GELU module they compute in their epilogue: "gelu" for BERT's erf GELU
    (transformers' GELUActivation, nn.GELU()), "gelu_tanh" for GPT-2's tanh approximation (gelu_new,
    gelu_fast, gelu_pytorch_tanh, nn.GELU(approximate="tanh")); None for any other module."""
    from transformers.activations import FastGELUActivation, GELUActivation, GELUTanh, NewGELUActivation

    if type(module) is GELUActivation:
        return "gelu" if getattr(module, "act", None) is nn.functional.gelu else None
    if type(module) in (NewGELUActivation, FastGELUActivation, GELUTanh):
        return "gelu_tanh"
    if type(module) is nn.GELU:
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(module.approximate)
    return None


# (Linear, activation applied right after it) in the blocks whose forward is act(linear(x)) there:
# BertIntermediate-like (`dense`, `intermediate_act_fn`) and GPT2MLP-like (`c_fc`, `act`)
_LINEAR_THEN_ACT = (("dense", "intermediate_act_fn"), ("c_fc", "act"))


def _fused_activations(model: nn.Module) -> dict[str, tuple[str, str]]:
    """Linear name -> (name of the GELU module right after it, the kernels' activation) for every block
    whose activation the Linear's kernel can take over."""
    owners = {}
    for name, module in model.named_modules():
        for linear_attr, act_attr in _LINEAR_THEN_ACT:
            linear, act = getattr(module, linear_attr, None), getattr(module, act_attr, None)
            kind = _fusable_gelu(act) if isinstance(act, nn.Module) else None
            if isinstance(linear, PRUNABLE_TYPES) and kind:
                prefix = f"{name}." if name else ""
                owners[f"{prefix}{linear_attr}"] = (f"{prefix}{act_attr}", kind)
    return owners


def convert(model: nn.Module, engine: str, threads: int, sparse_threshold: float | None = None,
            int8_attention: bool = True, choose_layout: str = "table", measure_tokens: int = 128) -> ConversionReport:
    """Swap the Linear layers of `model` (and GPT-2's Conv1D, its transposed Linear) in place for `engine`;
    returns what was chosen per layer.

    sparse_threshold: run a Linear sparse when its sparsity is at least this (math.inf: none);
    None (default): when it beats the dense kernel by the measured break-even sparsity of its shape
    (`policy.py`). choose_layout="measure" ("sparse-int8" only): each Linear at least `MEASURE_FLOOR`
    sparse takes the faster of its two int8 layouts, timed in whole forwards of `measure_tokens` tokens on
    this machine at load (`layout_choice.py`). int8_attention: "sparse-int8" also runs the attention
    products in int8 (else fp32)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if choose_layout not in ("table", "measure"):
        raise ValueError(f"unknown choose_layout {choose_layout!r}; choose 'table' or 'measure'")
    report = ConversionReport(engine, threads)
    if engine in ("torch", "dense"):
        if engine == "dense":
            report.fused_encoders = fuse_encoders(model, int8_attention)
            report.unfused = unfused_blocks(model)
        return report
    fused_acts = _fused_activations(model) if engine in SPARSE_ENGINES else {}
    # below the break-even sparsity, "sparse-int8" keeps the runtime's own (dense-layout) int8 kernel:
    # 1.1-1.4x fbgemm's speed per Linear with VNNI, 0.7-0.95x with AVX2 (exact int8 costs a sign there;
    # policy.py), and the encoder stays one native call
    native_dense = engine == "sparse-int8" and kernels.has_native_int8()
    measure = choose_layout == "measure"
    if measure and not native_dense:
        why = (f"engine {engine!r} has one layout per Linear" if engine != "sparse-int8"
               else "this CPU has no native int8 kernels (neither VNNI nor AVX2)")
        raise ValueError(f"choose_layout='measure' times sparse-int8's sparse and dense int8 layouts against each "
                         f"other, and {why}: use choose_layout='table'")
    linears = [(n, as_linear(m)) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    candidates: dict[str, tuple[nn.Module, nn.Module, tuple]] = {}
    for name, linear in linears:
        shape = (linear.in_features, linear.out_features)
        sparsity = float((linear.weight == 0).float().mean())
        fits = engine in SPARSE_ENGINES and linear.in_features <= MAX_IN_FEATURES
        if measure and fits and sparsity >= MEASURE_FLOOR:
            sparse_ok = True
        else:
            sparse_ok = fits and (policy.use_sparse(engine, *shape, sparsity) if sparse_threshold is None
                                  else sparsity >= sparse_threshold)
        act_name, act = fused_acts.get(name, (None, None))
        if sparse_ok or native_dense:
            if sparse_ok:
                module, path = (SparseLinear if engine == "sparse" else SparseInt8Linear)(linear, threads, act), engine
                if measure:
                    candidates[name] = (module, SparseInt8Linear(linear, threads, act, layout="dense"),
                                        layout_choice.group_of(shape, sparsity))
            else:
                module, path = SparseInt8Linear(linear, threads, act, layout="dense"), "dense-int8-native"
            set_child(model, name, module)
            if act:
                set_child(model, act_name, nn.Identity())
            report.layers.append(LayerChoice(name, shape, sparsity, path, act))
        elif engine in INT8_ENGINES:
            set_child(model, name, dynamic_int8_linear(linear))
            report.layers.append(LayerChoice(name, shape, sparsity, "dense-int8"))
        else:
            report.layers.append(LayerChoice(name, shape, sparsity, "dense"))
    if candidates:
        dense_names, report.layout_timing = layout_choice.measure_layouts(model, candidates, int8_attention,
                                                                          tokens=measure_tokens)
        for layer in report.layers:
            if layer.name in candidates:
                set_child(model, layer.name, candidates[layer.name][layer.name in dense_names])
                layer.path = "dense-int8-native" if layer.name in dense_names else engine
    if engine in SPARSE_ENGINES:
        report.fused_decoders = fuse_decoders(model)
    if engine in FUSED_ENGINES:
        report.fused_encoders = fuse_encoders(model, int8_attention)
        report.unfused = unfused_blocks(model)
    return report
