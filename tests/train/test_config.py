import pytest
from pydantic import ValidationError

from pruneofa.train.config import TrainConfig


@pytest.mark.parametrize("settings,processes,expected", [
    ({"batch_size": 256, "grad_accum": 4}, 1, (64, 4)),
    ({"batch_size": 256, "grad_accum": 4}, 8, (8, 4)),
    ({"batch_size": 256, "per_device_batch": 32}, 1, (32, 8)),  # the gpu recipes: accumulation follows the GPUs
    ({"batch_size": 256, "per_device_batch": 32}, 8, (32, 1)),
    ({"batch_size": 256, "per_device_batch": 32}, 3, None),  # 256 is not a multiple of 3 x 32
    ({"batch_size": 256, "per_device_batch": 64}, 8, None),  # 8 GPUs x 64 overshoot the global batch
    ({"batch_size": 10, "grad_accum": 4}, 1, None),
])
def test_micro_batching_keeps_the_global_batch(settings, processes, expected):
    config = TrainConfig(**settings)
    assert config.micro_batching(processes) == expected
    if expected:
        assert expected[0] * expected[1] * processes == config.batch_size


def test_grad_accum_and_per_device_batch_are_exclusive():
    with pytest.raises(ValidationError, match="one of train.grad_accum and train.per_device_batch"):
        TrainConfig(batch_size=256, grad_accum=2, per_device_batch=32)


def test_evaluation_batches_are_one_micro_batch():
    assert TrainConfig(batch_size=256, grad_accum=4).eval_batch_size() == 64
    assert TrainConfig(batch_size=256, per_device_batch=32).eval_batch_size() == 32
