"""choose_layout="measure": each sparse enough Linear of "sparse-int8" takes the int8 layout that whole forwards
timed at load found faster."""

from __future__ import annotations

import pytest
import torch

import pruneofa.runtime as rt
from pruneofa.runtime import kernels, layout_choice
from pruneofa.runtime.fused_encoder import FusedEncoder
from pruneofa.runtime.layers import SparseInt8Linear

from .conftest import tiny_bert

needs_native_int8 = pytest.mark.skipif(not kernels.has_native_int8(),
                                       reason="the CPU has no native int8 kernels (neither VNNI nor AVX2)")


def test_a_group_runs_dense_only_where_its_forward_was_faster():
    # seconds per forward: 1.0 with every group sparse; "a" dense saves 0.1, "b" dense costs 0.1, "c" changes nothing
    effect = {"a": -0.1, "b": 0.1, "c": 0.0}
    calls = []

    def time_forward(dense: frozenset) -> float:
        calls.append(dense)
        return 1.0 + sum(effect[g] for g in dense)

    dense, medians = layout_choice.choose_dense_groups(["a", "b", "c"], time_forward, rounds=3, warmup=1)
    assert dense == {"a"}  # a tie ("c") keeps the sparse layout
    configs = [frozenset(), frozenset("abc"), frozenset("a"), frozenset("b"), frozenset("c")]
    assert calls == configs * 4  # round by round, every configuration in turn; the warm-up round not counted
    assert medians[frozenset()] == 1.0 and medians[frozenset("a")] == pytest.approx(0.9)
    assert medians[frozenset("abc")] == pytest.approx(1.0)


def test_an_untimed_greedy_combination_is_timed_against_the_fastest():
    """Flipping "a" or "b" alone helps, both together help less than all dense: the greedy pair {a, b} is timed in
    a second phase against phase 1's best (all dense), which wins."""
    times = {frozenset(): 1.0, frozenset("ab"): 0.8, frozenset("abc"): 0.7, frozenset("a"): 0.9, frozenset("b"): 0.9,
             frozenset("c"): 1.1}
    calls = []

    def time_forward(dense: frozenset) -> float:
        calls.append(dense)
        return times[dense]

    dense, medians = layout_choice.choose_dense_groups(["a", "b", "c"], time_forward, rounds=2, warmup=0)
    assert dense == frozenset("abc") and medians[frozenset("ab")] == 0.8
    assert calls[-4:] == [frozenset("ab"), frozenset("abc")] * 2  # phase 2: the pair against the best, interleaved
    times[frozenset("ab")] = 0.6  # where the pair is the fastest, it is the answer
    assert layout_choice.choose_dense_groups(["a", "b", "c"], time_forward, rounds=2, warmup=0)[0] == frozenset("ab")


def test_the_median_over_rounds_decides():
    times = iter([1.0, 0.5, 1.0, 5.0, 1.0, 0.8])  # (all sparse, "a" dense) x 3: one slow outlier for "a"
    dense, medians = layout_choice.choose_dense_groups(["a"], lambda _: next(times), rounds=3, warmup=0)
    assert dense == {"a"} and medians[frozenset("a")] == 0.8


def test_rounds_are_checked():
    with pytest.raises(ValueError, match="rounds"):
        layout_choice.choose_dense_groups(["a"], lambda _: 1.0, rounds=0)


def _model_with_a_dense_layer():
    model = tiny_bert(0.9)
    with torch.no_grad():  # layer 1's attention output dense: not a candidate, it stays on the dense kernel
        model.encoder.layer[1].attention.output.dense.weight.normal_(0, 0.05)
    return model


@needs_native_int8
@pytest.mark.parametrize("decision", ["none", "all"])
def test_convert_applies_the_timed_decision(decision, monkeypatch, inputs):
    chosen = {}

    def choose(groups, time_forward, rounds):
        time_forward(frozenset(groups))  # a real forward of the candidate configuration runs
        chosen["groups"] = list(groups)
        return (frozenset(groups) if decision == "all" else frozenset()), {frozenset(): 1.0}

    monkeypatch.setattr(layout_choice, "choose_dense_groups", choose)
    model = _model_with_a_dense_layer()
    m = rt.load(model, engine="sparse-int8", choose_layout="measure")
    assert chosen["groups"] == [(64, 64, 0.9), (64, 160, 0.9), (160, 64, 0.9)]
    for layer in m.report.layers:
        dense = layer.name == "encoder.layer.1.attention.output.dense" or decision == "all"
        assert layer.path == ("dense-int8-native" if dense else "sparse-int8")
        module = m.model.get_submodule(layer.name.replace("encoder.", "encoder.original.", 1))  # fused
        assert isinstance(module, SparseInt8Linear) and (module.quads.layout == "dense") == dense
    assert m.model.encoder.native is not None  # still one native call
    # the GELU folded into the FFN-in kernel either way: the outputs are those of the same layouts chosen by threshold
    same = rt.load(model, engine="sparse-int8", sparse_threshold=float("inf") if decision == "all" else 0.5)
    torch.testing.assert_close(m(**inputs).last_hidden_state, same(**inputs).last_hidden_state, rtol=0, atol=0)


@needs_native_int8
def test_measured_load_reports_its_timings(inputs):
    model = _model_with_a_dense_layer()
    m = rt.load(model, engine="sparse-int8", choose_layout="measure")
    timing = m.report.layout_timing
    assert timing is not None and timing.tokens == 64  # 128 asked for: the tiny model has 64 positions
    short = rt.load(model, engine="sparse-int8", choose_layout="measure", measure_tokens=16)
    assert short.report.layout_timing.tokens == 16
    phase_1 = {"all sparse", "all dense", "64x64@0.90 dense", "64x160@0.90 dense", "160x64@0.90 dense"}
    mixes = set(timing.medians) - phase_1  # a second phase times an untimed mix of two groups, where one came out
    assert phase_1 <= set(timing.medians) and len(mixes) <= 1
    assert all(" + " in mix and mix.endswith(" dense") for mix in mixes)
    assert all(t > 0 for t in timing.medians.values())
    assert "layouts timed at load" in m.report.summary()
    dense_names = {c.name for c in m.report.layers if c.path == "dense-int8-native"}
    assert "encoder.layer.1.attention.output.dense" in dense_names
    assert isinstance(m.model.encoder, FusedEncoder) and m.model.encoder.native is not None  # fused again after
    assert not isinstance(m.model.encoder.original, FusedEncoder)  # ... the timing, once
    out = m(**inputs).last_hidden_state
    assert torch.isfinite(out).all() and out.shape == (2, 24, 64)


def test_measure_is_refused_where_there_is_one_layout(pruned_bert):
    with pytest.raises(ValueError, match="one layout per Linear"):
        rt.load(pruned_bert, engine="sparse", choose_layout="measure")
    with pytest.raises(ValueError, match="choose 'table' or 'measure'"):
        rt.load(pruned_bert, engine="sparse-int8", choose_layout="fastest")
