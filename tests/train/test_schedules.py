import pytest

from pruneofa.train.schedules import constant_lr, linear_warmup_decay, rewinding_lr


def test_linear_warmup_decay_at_key_points():
    assert linear_warmup_decay(0, 1.0, 10, 110) == 0.0
    assert linear_warmup_decay(5, 1.0, 10, 110) == pytest.approx(0.5)
    assert linear_warmup_decay(10, 1.0, 10, 110) == pytest.approx(1.0)
    assert linear_warmup_decay(60, 1.0, 10, 110) == pytest.approx(0.5)
    assert linear_warmup_decay(110, 1.0, 10, 110) == 0.0
    assert linear_warmup_decay(500, 1.0, 10, 110) == 0.0


def test_rewinding_holds_through_the_pruning_window_then_decays_to_zero():
    lr = lambda t: rewinding_lr(t, 2.0, warmup=1000, hold_until=50_000, total=100_000)  # noqa: E731
    assert lr(0) == 0.0 and lr(500) == pytest.approx(1.0)
    assert lr(1000) == lr(25_000) == lr(49_999) == 2.0
    assert lr(50_000) == pytest.approx(2.0)
    assert lr(75_000) == pytest.approx(1.0)
    assert lr(100_000) == 0.0 and lr(120_000) == 0.0


def test_constant():
    assert constant_lr(5, 1.0, 10) == pytest.approx(0.5) and constant_lr(50, 1.0, 10) == 1.0 and constant_lr(0, 1.0, 0) == 1.0
