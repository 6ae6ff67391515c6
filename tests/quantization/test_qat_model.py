import copy

import pytest
import torch
from tests.quantization.helpers import batch, tiny_bert
from safetensors.torch import load_file, save_file

from pruneofa import Pruner
from pruneofa.errors import UserError
from pruneofa.modeldir import load_qat
from pruneofa.quantization import (
    QuantConfig,
    prepare_qat,
    qat_layers,
    quantization_state,
    quantized_weights,
    save_qat,
    strip_qat,
)
from pruneofa.quantization.fake_quant import dequantize_symmetric
from pruneofa.sparsity import masks as M


def train(model, steps: int, weight_decay: float = 0.1):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    for step in range(steps):
        model(**batch(step)).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def test_default_selection_is_blocks_pooler_and_head_not_embeddings():
    model = prepare_qat(tiny_bert())
    names = set(qat_layers(model))
    assert "bert.encoder.layer.1.output.dense" in names
    assert {"bert.pooler.dense", "classifier"} <= names
    assert len(names) == 2 * 6 + 2
    assert not any("embeddings" in n for n in names)


def test_config_is_strict():
    with pytest.raises(ValueError):
        QuantConfig(bits=4)
    with pytest.raises(ValueError):
        QuantConfig(per_chanel=True)
    with pytest.raises(UserError):
        prepare_qat(tiny_bert(), include=["nothing-matches"])


def test_zeros_survive_qat_bit_exactly_under_pattern_lock(sparse_bert):
    model, pruner = sparse_bert
    zeros = {name: ~M.get_mask(m).clone() for name, m in pruner.layers.items()}
    prepare_qat(model, per_channel=True)
    before = {n: w.clone() for n, w in model.state_dict().items()}
    train(model, steps=4)
    assert any(not torch.equal(before[n], w) for n, w in model.state_dict().items() if n.endswith("original"))
    int8 = quantized_weights(model)
    for name, module in pruner.layers.items():
        assert torch.equal(~M.get_mask(module), zeros[name])  # the pattern did not move
        assert (module.weight[zeros[name]] == 0).all()  # the weight the forward uses
        assert (int8[f"{name}.weight"][0][zeros[name]] == 0).all()  # the int8 export
    assert pruner.overall_sparsity() == pytest.approx(0.9, abs=0.01)


def test_observers_learn_in_training_and_state_reports_them(sparse_bert):
    model, _ = sparse_bert
    prepare_qat(model)
    state = quantization_state(model)
    assert state["classifier"]["input_scale"] is None  # nothing observed yet
    train(model, steps=2)
    state = quantization_state(model)["bert.encoder.layer.0.attention.self.query"]
    assert state["weight_scale"].shape == ()
    assert state["input_min"] < 0 < state["input_max"]
    assert 0 <= state["input_zero_point"] <= 255


def test_quantized_weights_dequantize_to_the_forward_weights(sparse_bert):
    model, _ = sparse_bert
    prepare_qat(model, per_channel=True)
    train(model, steps=1)
    layers = qat_layers(model)
    for key, (q, scale) in quantized_weights(model).items():
        module = layers[key.removesuffix(".weight")]
        assert q.dtype == torch.int8 and q.shape == module.weight.shape and scale.shape == (q.shape[0],)
        assert torch.equal(dequantize_symmetric(q, scale), module.weight.detach())


def test_strip_qat_keeps_masks_and_restores_plain_linear(sparse_bert):
    model, pruner = sparse_bert
    prepare_qat(model)
    train(model, steps=1)
    fq_weights = {n: m.weight.detach().clone() for n, m in qat_layers(model).items()}
    copy_ = copy.deepcopy(model)
    strip_qat(copy_, keep_quantized_values=True)
    assert not qat_layers(copy_)
    assert not any("input_quant" in k for k in copy_.state_dict())
    for name, module in copy_.named_modules():
        if name in fq_weights:
            assert torch.equal(module.weight, fq_weights[name])
            assert not module._forward_pre_hooks
    assert M.has_mask(copy_.bert.encoder.layer[0].output.dense)
    # the original keeps working after its deep copy was stripped (shared parametrized classes)
    model(**batch(0))
    assert qat_layers(model)
    strip_qat(model)  # float weights: the query's weight is no longer on the int8 grid
    q = model.bert.encoder.layer[0].attention.self.query
    assert not torch.equal(q.weight, fq_weights["bert.encoder.layer.0.attention.self.query"])
    assert torch.equal(q.weight == 0, ~M.get_mask(q))


def test_state_dict_round_trip_through_safetensors(sparse_bert, tmp_path):
    model, _ = sparse_bert
    prepare_qat(model, per_channel=True)
    train(model, steps=2)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "qat.safetensors")

    fresh = tiny_bert(seed=5)
    Pruner(fresh, method="oneshot", target_sparsity=0.9, start_step=0)
    prepare_qat(fresh, per_channel=True)
    fresh.load_state_dict(load_file(tmp_path / "qat.safetensors"))
    fresh.eval()
    inputs = {k: v for k, v in batch(9).items() if k != "labels"}
    assert torch.equal(fresh(**inputs).logits, model(**inputs).logits)


def test_save_qat_and_load_qat_give_the_same_model(sparse_bert, tmp_path):
    model, pruner = sparse_bert
    prepare_qat(model)
    train(model, steps=2)
    save_qat(model, tmp_path)
    reloaded = load_qat(tmp_path)
    inputs = {k: v for k, v in batch(7).items() if k != "labels"}
    assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)
    for name, state in quantization_state(model).items():
        for key, value in state.items():
            assert torch.equal(quantization_state(reloaded)[name][key], value), (name, key)
    # the pattern lock comes back with it, and model.safetensors is a plain checkpoint
    assert M.has_mask(reloaded.bert.encoder.layer[0].attention.self.query)
    assert not any("input_quant" in k or "parametrizations" in k for k in load_file(tmp_path / "model.safetensors"))


def test_load_qat_rejects_a_directory_without_state(tmp_path):
    with pytest.raises(UserError, match="qat_state"):
        load_qat(tmp_path)


def test_prepared_in_eval_observes_nothing_until_calibrated():
    from pruneofa.quantization import calibrate

    model = prepare_qat(tiny_bert().eval())
    inputs = {k: v for k, v in batch(1).items() if k != "labels"}
    model(**inputs)
    assert quantization_state(model)["classifier"]["input_scale"] is None
    calibrate(model, [inputs, {k: v for k, v in batch(2).items() if k != "labels"}])
    state = quantization_state(model)
    assert all(s["input_scale"] is not None for s in state.values())
    assert not model.training and not any(m.training for m in model.modules())
    before = quantization_state(model)
    model(**inputs)  # frozen again
    assert all(torch.equal(before[n]["input_max"], s["input_max"]) for n, s in quantization_state(model).items())
