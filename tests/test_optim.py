"""The optimiser configuration: SGD over the named groups, cosine to zero per step, or constant."""

from __future__ import annotations

import pytest
import torch

from pkkd_lightning.optim import sgd_with_schedule


def groups() -> list[dict]:
    return [{"name": "a", "params": [torch.nn.Parameter(torch.ones(2))]}]


def test_cosine_falls_from_lr_to_zero_over_the_steps():
    config = sgd_with_schedule(groups(), 0.2, 0.9, False, 5e-4, "cosine", total_steps=100)
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.2) and lrs[50] == pytest.approx(0.1) and lrs[99] < 1e-4
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert optimizer.param_groups[0]["name"] == "a" and optimizer.param_groups[0]["weight_decay"] == 5e-4


def test_constant_has_no_scheduler():
    assert set(sgd_with_schedule(groups(), 0.1, 0.9, True, 0.0, "constant", 0)) == {"optimizer"}
