"""ONNX on a tiny random BERT (hidden 32, 2 layers). Each export takes a few seconds, so few of them.

Tolerances: fp32 ONNX vs PyTorch max |Δlogit| < 1e-4. int8 QDQ ONNX vs the PyTorch QAT model (same
int8 grids on both sides; onnxruntime computes the matmuls in integers): max |Δlogit| ≤ 1% of the
largest |logit| and argmax agreement ≥ 95%. Measured: ~1e-6 and 100%."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tests.export.helpers import batch, prune, qat_train, tiny_bert
from onnx import numpy_helper

from pruneofa.errors import UserError
from pruneofa.export import export_onnx
from pruneofa.runtime import kernels
from pruneofa.quantization import prepare_qat, qat_layers, quantization_state, quantized_weights
from pruneofa.sparsity import masks as M


def run_onnx(path, inputs, fuse=True):
    """onnxruntime's output; `fuse=False` runs each Q/DQ node as written (fp32 math, no int8 kernels)."""
    options = ort.SessionOptions()
    if not fuse:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]


def other_shapes(seed=11):
    """A batch and length the trace never saw, with padding: the axes must be dynamic."""
    return batch(seed, size=33, length=19, labels=False)


def test_fp32_onnx_matches_pytorch(tmp_path):
    model = tiny_bert(weight_std=0.3)
    prune(model)
    path = export_onnx(model, None, tmp_path / "model.onnx")
    inputs = other_shapes()
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
    assert [i.name for i in ort.InferenceSession(str(path)).get_inputs()] == list(inputs)
    assert np.abs(run_onnx(path, inputs) - expected).max() < 1e-4
    assert np.abs(expected).max() > 0.1  # logits big enough for the tolerance to mean something


def test_int8_qdq_onnx_matches_the_qat_model_and_keeps_zeros(tmp_path):
    model = tiny_bert(weight_std=0.3)
    pruner = prune(model)
    qat_train(model, per_channel=True)
    path = export_onnx(model, None, tmp_path / "int8.onnx", int8=True)

    inputs = other_shapes()
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
    # the graph itself computes the QAT model: run node by node it agrees to fp32 round-off
    assert np.abs(run_onnx(path, inputs, fuse=False) - expected).max() <= 1e-4 * np.abs(expected).max()
    got = run_onnx(path, inputs)
    # Without VNNI, onnxruntime's x86 u8 x s8 GEMM adds products in pairs into int16 (vpmaddubsw), which
    # saturates on large activations: its int8 results then differ by more than the QAT rounding alone
    tolerance = 0.01 if kernels.has_vnni() else 0.2
    assert np.abs(got - expected).max() <= tolerance * np.abs(expected).max()
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.95

    graph = onnx.load(str(path)).graph
    layers = qat_layers(model)
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants = {**initializers, **{n.output[0]: numpy_helper.to_array(n.attribute[0].t)
                                    for n in graph.node if n.op_type == "Constant"}}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    weight_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("weight_int8_t")]
    assert len(weight_dq) == len(layers)
    # query, key and value read the same tensor and see the same range: the graph optimizer
    # shares one QDQ pair among them, so a block has 4 activation QDQs for its 6 Linear layers
    assert len(quantize) == len(layers) - 2 * model.config.num_hidden_layers
    state = quantization_state(model)
    observed = {(float(s["input_scale"]), int(s["input_zero_point"])) for s in state.values()}
    in_graph = {(float(constants[n.input[1]]), int(constants[n.input[2]])) for n in quantize}
    assert in_graph == observed and constants[quantize[0].input[2]].dtype == np.uint8
    for key, (q, scale) in quantized_weights(model).items():
        layer = key.removesuffix(".weight")
        stored = initializers[f"model.{layer}.weight_int8_t"]
        assert stored.dtype == np.int8 and np.array_equal(stored.T, q.numpy())
        assert np.array_equal(initializers[f"model.{layer}.weight_scale"], scale.numpy())
        if layer in pruner.layers:
            assert (stored.T[~M.get_mask(pruner.layers[layer]).numpy()] == 0).all()


def test_int8_export_needs_an_observed_qat_model(tmp_path):
    model = tiny_bert()
    with pytest.raises(UserError, match="QAT model"):
        export_onnx(model, None, tmp_path / "a.onnx", int8=True)
    prepare_qat(model)
    with pytest.raises(UserError, match="seen no data"):
        export_onnx(model, None, tmp_path / "b.onnx", int8=True)
