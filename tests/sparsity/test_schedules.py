import pytest

from pruneofa.sparsity.schedules import (
    cubic_sparsity, gmp_sparsity, is_update_step, one_shot_sparsity,
)


def formula(t, si, sf, t0, t1):
    return sf + (si - sf) * (1 - (t - t0) / (t1 - t0)) ** 3


@pytest.mark.parametrize("si,sf,t0,t1", [(0.0, 0.9, 0, 50_000), (0.1, 0.85, 100, 1100)])
def test_cubic_at_t0_mid_t1_and_beyond(si, sf, t0, t1):
    mid = (t0 + t1) // 2
    assert cubic_sparsity(t0, si, sf, t0, t1) == pytest.approx(si)
    assert cubic_sparsity(mid, si, sf, t0, t1) == pytest.approx(formula(mid, si, sf, t0, t1))
    assert cubic_sparsity(mid, si, sf, t0, t1) == pytest.approx(sf + (si - sf) / 8)
    assert cubic_sparsity(t1, si, sf, t0, t1) == pytest.approx(sf)
    assert cubic_sparsity(t1 + 10_000, si, sf, t0, t1) == pytest.approx(sf)
    assert cubic_sparsity(t0 - 1, si, sf, t0, t1) == pytest.approx(si)
    for t in (t0 + 1, t0 + (t1 - t0) // 3, t1 - 1):
        assert cubic_sparsity(t, si, sf, t0, t1) == pytest.approx(formula(t, si, sf, t0, t1))


def test_gmp_is_a_staircase_updated_every_frequency_until_stop():
    # the paper: target at 50k, masks updated every 1k until 80k
    args = dict(initial=0.0, final=0.9, begin=0, end=50_000, stop=80_000, frequency=1000)
    assert gmp_sparsity(0, **args) == 0.0
    assert gmp_sparsity(1999, **args) == pytest.approx(formula(1000, 0.0, 0.9, 0, 50_000))
    assert gmp_sparsity(25_500, **args) == pytest.approx(formula(25_000, 0.0, 0.9, 0, 50_000))
    assert gmp_sparsity(50_000, **args) == pytest.approx(0.9)
    assert gmp_sparsity(99_999, **args) == pytest.approx(0.9)
    assert is_update_step(3000, 0, 80_000, 1000) and not is_update_step(3001, 0, 80_000, 1000)
    assert is_update_step(80_000, 0, 80_000, 1000) and not is_update_step(81_000, 0, 80_000, 1000)
    assert not is_update_step(-1000, 0, 80_000, 1000)


def test_one_shot():
    assert one_shot_sparsity(9, 0.9, 10) == 0.0 and one_shot_sparsity(10, 0.9, 10) == 0.9
