"""LossWeightSchedule: its values, that it drives the module through the validated setter, and its resume."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pkkd_lightning import PKKDModule
from pkkd_lightning.callbacks import LossWeightSchedule, schedule_value
from pkkd_lightning.callbacks.loss_weight_schedule import Shape
from pkkd_lightning.validation import choices


@pytest.mark.parametrize(
    "shape,epoch,expected",
    [
        ("constant", 5, 0.1),
        ("linear", 0, 0.1),
        ("linear", 2, 0.1),
        ("linear", 6, 0.3),
        ("linear", 10, 0.5),
        ("linear", 20, 0.5),
        ("cosine", 6, 0.3),
        ("cosine", 4, 0.1 + 0.4 * (1 - 0.5**0.5) / 2),
    ],
)
def test_schedule_values_at_given_epochs(shape, epoch, expected):
    assert schedule_value(shape, 0.1, 0.5, epoch, start_epoch=2, end_epoch=10) == pytest.approx(expected)


@pytest.mark.parametrize("shape", choices(Shape))
def test_every_shape_starts_and_ends_where_it_says(shape):
    assert schedule_value(shape, 0.2, 0.4, 0, 0, 4) == pytest.approx(0.2)
    assert schedule_value(shape, 0.2, 0.4, 4, 0, 4) == pytest.approx(0.2 if shape == "constant" else 0.4)


def trainer(epoch: int, max_epochs: int = 5) -> SimpleNamespace:
    return SimpleNamespace(current_epoch=epoch, max_epochs=max_epochs, loggers=[])


def test_the_schedule_sets_the_module_weight_at_each_epoch_start():
    schedule = LossWeightSchedule("feature_weight", "linear", 1.0, 0.0)
    module = PKKDModule("resnet20", 10, feature_weight=0.7)
    for epoch, expected in [(0, 1.0), (2, 0.5), (4, 0.0)]:
        schedule.on_train_epoch_start(trainer(epoch), module)
        assert module.loss_weights.feature_weight == pytest.approx(expected)


def test_a_resumed_run_gets_the_saved_value_back_on_the_module_before_its_first_step():
    running = LossWeightSchedule("beta", "linear", 0.1, 0.5)
    running.on_train_epoch_start(trainer(2), PKKDModule("resnet20", 10))
    resumed = LossWeightSchedule("beta", "linear", 0.1, 0.5)
    resumed.load_state_dict(running.state_dict())
    module = PKKDModule("resnet20", 10, beta=0.5)  # what the constructor gives
    resumed.on_train_start(trainer(2), module)  # a mid-epoch resume skips on_train_epoch_start
    assert module.loss_weights.beta == pytest.approx(0.3)


def test_a_fresh_run_keeps_the_module_value_until_its_first_epoch_starts():
    module = PKKDModule("resnet20", 10, beta=0.25)
    LossWeightSchedule("beta", "linear", 0.1, 0.5).on_train_start(trainer(0), module)
    assert module.loss_weights.beta == 0.25


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"name": "gamma"}, "name"),
        ({"shape": "step"}, "shape"),
        ({"name": "beta", "end": 1.5}, r"model\.beta"),
        ({"name": "tau", "start": 0.0}, r"model\.tau"),
        ({"start_epoch": 5, "end_epoch": 2}, "end_epoch"),
    ],
)
def test_bad_schedules_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossWeightSchedule(**kwargs)


def test_the_schedule_describes_itself_for_the_log():
    assert LossWeightSchedule("beta", "linear", 0.0, 0.5).describe() == "beta: linear 0.0 -> 0.5, epochs 0..last"
    assert LossWeightSchedule("tau", "constant", 2.0).describe() == "tau: constant 2.0"
