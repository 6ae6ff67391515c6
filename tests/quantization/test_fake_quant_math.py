import pytest
import torch

from pruneofa.quantization.fake_quant import (
    affine_qparams,
    dequantize_symmetric,
    fake_quantize,
    quantize_symmetric,
    symmetric_scale,
)
from pruneofa.quantization.modules import ActivationFakeQuant, WeightFakeQuant


@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_round_trip_error_is_at_most_half_a_step(per_channel):
    torch.manual_seed(0)
    w = torch.randn(16, 24) * torch.logspace(-2, 0, 16)[:, None]
    scale = symmetric_scale(w, per_channel)
    step = scale[:, None] if per_channel else scale
    error = (WeightFakeQuant(w, per_channel)(w) - w).abs()
    assert (error <= step / 2 * (1 + 1e-6)).all()
    assert error.max() > 0  # it does quantize


def test_activation_round_trip_error_is_at_most_half_a_step_inside_the_range():
    x = torch.linspace(-1.0, 3.0, 1001)
    scale, zero_point = affine_qparams(x.min(), x.max())
    error = (fake_quantize(x, scale, zero_point.float(), 0, 255) - x).abs()
    assert (error <= scale / 2 * (1 + 1e-5)).all()


def test_zero_weights_quantize_to_exactly_zero():
    torch.manual_seed(1)
    w = torch.randn(8, 8)
    w[w.abs() < 0.7] = 0
    for per_channel in (False, True):
        assert (WeightFakeQuant(w, per_channel)(w)[w == 0] == 0).all()
        assert (quantize_symmetric(w, symmetric_scale(w, per_channel))[w == 0] == 0).all()


def test_dequantized_int8_equals_fake_quant_bit_for_bit():
    torch.manual_seed(2)
    w = torch.randn(10, 7)
    for per_channel in (False, True):
        scale = symmetric_scale(w, per_channel)
        q = quantize_symmetric(w, scale)
        assert q.dtype == torch.int8 and q.abs().max() == 127
        assert torch.equal(dequantize_symmetric(q, scale), WeightFakeQuant(w, per_channel)(w))


def test_per_channel_scales_follow_rows_per_tensor_the_whole_matrix():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25], [0.0, 0.0]])
    assert torch.equal(symmetric_scale(w, per_channel=False), torch.tensor(2.0 / 127))
    assert torch.equal(symmetric_scale(w, per_channel=True), torch.tensor([2.0, 0.5, 1.0 * 127]) / 127)
    # columns as channels (GPT-2 Conv1D layout)
    assert torch.equal(symmetric_scale(w, per_channel=True, axis=1), torch.tensor([1.0, 2.0]) / 127)
    # a small row keeps its precision per channel and loses it per tensor
    per_tensor = (WeightFakeQuant(w, False)(w) - w).abs()[1].max()
    per_channel = (WeightFakeQuant(w, True)(w) - w).abs()[1].max()
    assert per_channel < per_tensor


def test_ste_gradient_is_identity_inside_the_range_and_zero_outside():
    scale, zero_point = torch.tensor(0.1), torch.tensor(100.0)  # range [-10.0, 15.5]
    x = torch.tensor([-20.0, -10.5, -9.93, 0.0, 3.14159, 15.4, 15.6, 40.0], requires_grad=True)
    y = fake_quantize(x, scale, zero_point, 0, 255)
    y.backward(torch.arange(1.0, 9.0))
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]))
    assert y[0] == y[1] == -10.0  # clipped to the bottom of the grid
    assert torch.isclose(y[-1], torch.tensor(15.5))


def test_ema_observer_matches_a_hand_computation():
    observer = ActivationFakeQuant(momentum=0.9).train()
    batches = [torch.tensor([-1.0, 2.0]), torch.tensor([-3.0, 0.5]), torch.tensor([0.2, 4.0])]
    lo, hi = -1.0, 2.0  # the first batch sets the range
    for i, x in enumerate(batches):
        observer(x)
        if i > 0:
            lo = 0.9 * lo + 0.1 * float(x.min())
            hi = 0.9 * hi + 0.1 * float(x.max())
    assert observer.min_val.item() == pytest.approx(lo, rel=1e-6)  # -1.2
    assert observer.max_val.item() == pytest.approx(hi, rel=1e-6)  # 2.48
    scale = (hi - lo) / 255
    assert observer.scale.item() == pytest.approx(scale, rel=1e-6)
    assert observer.zero_point.item() == round(-lo / scale)


def test_observer_is_frozen_in_eval_and_passes_through_before_any_batch():
    observer = ActivationFakeQuant().eval()
    x = torch.randn(5)
    assert torch.equal(observer(x), x) and not observer.observed
    observer.train()(torch.tensor([-1.0, 1.0]))
    observer.eval()
    before = {k: v.clone() for k, v in observer.state_dict().items()}
    observer(torch.tensor([-50.0, 50.0]))
    assert all(torch.equal(before[k], v) for k, v in observer.state_dict().items())


def test_range_is_widened_to_contain_zero():
    scale, zero_point = affine_qparams(torch.tensor(2.0), torch.tensor(4.0))
    assert zero_point.item() == 0 and scale.item() == pytest.approx(4.0 / 255)
    x = torch.tensor([0.0, 3.0])
    assert fake_quantize(x, scale, zero_point.float(), 0, 255)[0] == 0
