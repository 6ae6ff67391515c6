"""Every engine against the dense fp32 model, on a tiny BERT pruned to 90% with pruneofa.Pruner.

Stated tolerances (last_hidden_state, LayerNorm-scaled, O(1) values):
- fp32 engines ("torch", "dense", "sparse"): max abs diff <= 1e-4 (summation order only).
- int8 engines ("torch-int8", "dense-int8", "sparse-int8"): relative Frobenius error <= 5%
  (dynamic int8 of every Linear of a random-weight model; measured 1-2%), and the "sparse-int8"
  error is no worse than 1.5x that of PyTorch's own dynamic int8.
"""

from __future__ import annotations

import pytest
import torch

import pruneofa.runtime as rt
from pruneofa.runtime import kernels
from pruneofa.runtime.fused_encoder import FusedEncoder
from pruneofa.runtime.layers import SparseInt8Linear, SparseLinear

from .conftest import reference, tiny_bert

FP32 = ["torch", "dense", "sparse"]
INT8 = ["torch-int8", "dense-int8", "sparse-int8"]


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("engine", FP32)
def test_fp32_engines_match_dense(engine, pruned_bert, inputs):
    expected = reference(pruned_bert, inputs)
    out = rt.load(pruned_bert, engine=engine)(**inputs)
    torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.pooler_output, expected.pooler_output, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("engine", INT8)
def test_int8_engines_match_dense(engine, pruned_bert, inputs):
    expected = reference(pruned_bert, inputs).last_hidden_state
    assert rel_err(rt.load(pruned_bert, engine=engine)(**inputs).last_hidden_state, expected) < 0.05


def test_sparse_int8_no_worse_than_torch_int8(pruned_bert, inputs):
    expected = reference(pruned_bert, inputs).last_hidden_state
    ours = rel_err(rt.load(pruned_bert, engine="sparse-int8")(**inputs).last_hidden_state, expected)
    theirs = rel_err(rt.load(pruned_bert, engine="torch-int8")(**inputs).last_hidden_state, expected)
    assert ours <= 1.5 * theirs


def test_sparse_engine_swaps_modules_and_fuses(pruned_bert):
    m = rt.load(pruned_bert, engine="sparse")
    assert isinstance(m.model.encoder, FusedEncoder)
    assert isinstance(m.model.encoder.original.layer[0].attention.self.query, SparseLinear)
    assert m.model.encoder.original.layer[0].intermediate.dense.fused_act == "gelu"
    assert all(c.path == "sparse" for c in m.report.layers)
    assert "sparse" in m.report.summary()
    # the model passed in is left alone (load converts a copy)
    assert type(pruned_bert.encoder.layer[0].attention.self.query) is torch.nn.Linear


def dense_int8_path() -> str:
    """What "sparse-int8" runs a Linear below its break-even sparsity on: the runtime's own dense
    int8 kernel where it has SIMD int8 kernels (AVX-512 VNNI or AVX2), else fbgemm."""
    return "dense-int8-native" if kernels.has_native_int8() else "dense-int8"


def test_dense_layers_stay_dense(inputs):
    """Below the break-even sparsity the sparse engines keep a dense path: MKL for "sparse"; for
    "sparse-int8" the runtime's dense int8 kernel (layout "dense"), so the encoder stays one native call."""
    model = tiny_bert(sparsity=0.2)
    m = rt.load(model, engine="sparse-int8")
    assert all(c.path == dense_int8_path() for c in m.report.layers)
    linears = [x for x in m.model.modules() if isinstance(x, SparseInt8Linear)]
    if kernels.has_native_int8():
        assert len(linears) == len(m.report.layers) and {x.quads.layout for x in linears} == {"dense"}
        assert m.model.encoder.native is not None
    else:
        assert not linears
    assert rel_err(m(**inputs).last_hidden_state, reference(model, inputs).last_hidden_state) < 0.05
    assert all(c.path == "dense" for c in rt.load(model, engine="sparse").report.layers)


def test_compacted_structured_model_runs_in_one_native_call(inputs, monkeypatch):
    """Issue 7: a structured-pruned model (2/3 of the FFN neurons, half of the heads) compacted into
    smaller dense matrices runs on "sparse-int8" with every Linear on the dense int8 kernel and the
    whole encoder in one `pofa_encoder` call (attention width below the hidden width), within the
    int8 tolerance of the torch fp32 model it was compacted from."""
    from pruneofa import Pruner
    from pruneofa.export.compact import compact_model
    from pruneofa.runtime.native_encoder import NativeEncoder

    if not kernels.has_native_int8():
        pytest.skip(f"the dense native path needs SIMD int8 kernels (AVX-512 VNNI or AVX2), this build: "
                    f"{kernels.kernel_isa()} (fbgemm per layer)")
    model = tiny_bert(sparsity=0)
    Pruner(model, pattern="structured", method="oneshot", start_step=0, ffn_sparsity=0.6667, head_sparsity=0.5)
    compact = compact_model(model)
    assert compact.encoder.layer[0].intermediate.dense.out_features < model.config.intermediate_size
    m = rt.load(compact, engine="sparse-int8")
    assert {c.path for c in m.report.layers} == {"dense-int8-native"}
    calls = []
    original = NativeEncoder.__call__
    monkeypatch.setattr(NativeEncoder, "__call__", lambda self, *a: calls.append(1) or original(self, *a))
    out = m(**inputs).last_hidden_state
    assert len(calls) == 1
    assert rel_err(out, reference(model, inputs).last_hidden_state) < 0.05


def test_block_pattern_uses_block_layout(inputs):
    model = tiny_bert(pattern="block:1x4")
    m = rt.load(model, engine="sparse-int8")
    layouts = {x.quads.layout for x in m.model.modules() if isinstance(x, SparseInt8Linear)}
    assert layouts == {"blocks"}
    assert rel_err(m(**inputs).last_hidden_state, reference(model, inputs).last_hidden_state) < 0.05


def test_fallback_path_for_hidden_states(pruned_bert, inputs):
    """Requests the fast path does not cover run the original (converted) layers."""
    m = rt.load(pruned_bert, engine="sparse")
    out = m(**inputs, output_hidden_states=True)
    expected = reference(pruned_bert, {**inputs, "output_hidden_states": True})
    assert len(out.hidden_states) == len(expected.hidden_states)
    torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, atol=1e-4, rtol=1e-4)


def test_load_from_directory_returns_logits(tmp_path, inputs):
    from transformers import BertForSequenceClassification

    model = tiny_bert(cls=BertForSequenceClassification)
    model.save_pretrained(tmp_path)
    m = rt.load(tmp_path, engine="sparse-int8", threads=1)
    assert m.threads == 1 and m.engine == "sparse-int8"
    logits = m(**inputs).logits
    assert logits.shape == (2, 3)
    assert rel_err(logits, reference(model, inputs).logits) < 0.1


def test_default_threads_follow_the_machine():
    import os

    assert 1 <= rt.default_threads() <= len(os.sched_getaffinity(0))
    assert rt.default_threads() <= torch.get_num_threads()


def test_unknown_engine_is_refused(pruned_bert):
    with pytest.raises(ValueError, match="unknown engine"):
        rt.load(pruned_bert, engine="deepsparse")


def test_missing_compiler_falls_back_to_dense(pruned_bert, inputs, monkeypatch, tmp_path):
    from pruneofa.runtime import build

    monkeypatch.setenv("PRUNEOFA_CACHE", str(tmp_path))  # nothing cached there
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    build._load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="falls back"), \
                pytest.warns(RuntimeWarning, match="native kernel build failed, trying the portable one"):
            m = rt.load(pruned_bert, engine="sparse")
        assert m.engine == "torch"
        with pytest.raises(build.KernelBuildError, match="no C\\+\\+ compiler"):
            build.load_library()
        assert rt.load(pruned_bert).engine == "torch"  # auto
    finally:
        build._load.cache_clear()


@pytest.mark.parametrize("engine", ["sparse", "sparse-int8"])
@pytest.mark.parametrize("cls_name", ["BertModel", "BertForSequenceClassification"])
def test_fast_path_equals_transformers_forward(engine, cls_name, inputs):
    """Plain calls skip transformers' forward (fast_path.py); both paths must give the same outputs: fp32 to float
    rounding; int8 within a rounding step, since the fast path's embeddings LayerNorm is the runtime's own (one
    activation may quantise the other way)."""
    import transformers

    model = tiny_bert(cls=getattr(transformers, cls_name))
    m = rt.load(model, engine=engine)
    assert m.fast_path is not None
    calls = []
    original = m.fast_path.native
    m.fast_path.native = lambda *a: calls.append(1) or original(*a)
    for kwargs in (inputs, {"input_ids": inputs["input_ids"]}, {k: inputs[k] for k in ("input_ids", "attention_mask")}):
        fast = m(**kwargs)
        with torch.no_grad():
            slow = m.model(**kwargs)  # transformers' forward, same converted modules
        assert type(fast) is type(slow)
        for key in slow.keys():
            if engine == "sparse":
                torch.testing.assert_close(fast[key], slow[key], atol=1e-5, rtol=1e-5)
            else:
                assert float((fast[key] - slow[key]).norm() / slow[key].norm()) < 1e-3
    assert len(calls) == 3
    m(**inputs, output_hidden_states=True)  # not plain: transformers' forward
    assert len(calls) == 3


def test_fast_path_takes_a_compacted_checkpoint_but_not_a_changed_forward(inputs, tmp_path):
    """A compacted dir loads as CompactBertForSequenceClassification (smaller layers, stock forward):
    plain calls take the fast path, with transformers' outputs. A subclass with its own forward does not."""
    import transformers

    from pruneofa import Pruner
    from pruneofa.export.compact import export_compact_hf
    from pruneofa.modeldir import load_plain as load_model_dir

    model = tiny_bert(sparsity=0, cls=transformers.BertForSequenceClassification)
    Pruner(model, pattern="structured", method="oneshot", start_step=0, ffn_sparsity=0.5, head_sparsity=0.5)
    compact = load_model_dir(export_compact_hf(model, tmp_path / "compact")).eval()
    assert type(compact).__name__ == "CompactBertForSequenceClassification"
    if not kernels.has_native_int8():
        pytest.skip("a dense model runs natively (the fast path's condition) on the SIMD dense int8 kernel, "
                    f"this build: {kernels.kernel_isa()}")
    m = rt.load(compact, engine="sparse-int8")
    assert m.fast_path is not None
    with torch.no_grad():
        torch.testing.assert_close(m(**inputs).logits, m.model(**inputs).logits, atol=1e-5, rtol=1e-5)
        assert rel_err(m(**inputs).logits, model(**inputs).logits) < 0.05

    class OwnForward(transformers.BertForSequenceClassification):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    assert rt.load(OwnForward(model.config).eval(), engine="sparse-int8").fast_path is None


@pytest.mark.parametrize("engine", ["sparse", "sparse-int8"])
def test_mixed_sparse_and_dense_layers(engine, inputs):
    """Layers on either side of the break-even point: per-layer choice. fp32: layout switches between
    feature-major (all-sparse layers) and token-major (MKL) layers, no native encoder. int8: the dense
    layer is on the runtime's dense int8 kernel, so the whole encoder is still one native call."""
    model = tiny_bert()
    with torch.no_grad():  # densify the second layer: it must stay dense
        for name, module in model.encoder.layer[1].named_modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn_like(module.weight) * 0.05)
    m = rt.load(model, engine=engine)
    paths = {c.name.split(".")[2]: c.path for c in m.report.layers if c.name.startswith("encoder.layer.")}
    assert paths["0"] == engine and paths["1"] == ("dense" if engine == "sparse" else dense_int8_path())
    native = engine == "sparse-int8" and kernels.has_native_int8()
    assert (m.model.encoder.native is not None) == native and (m.fast_path is not None) == native
    expected = reference(model, inputs).last_hidden_state
    out = m(**inputs).last_hidden_state
    if engine == "sparse":
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    else:
        assert rel_err(out, expected) < 0.05
