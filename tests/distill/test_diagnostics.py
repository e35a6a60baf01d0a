"""Gradient shares and kernel statistics against hand computations."""

from __future__ import annotations

import pytest
import torch

from pkkd_lightning.distill import PointFeatures
from pkkd_lightning.distill.diagnostics import gradient_shares, kernel_statistics


def test_shares_are_the_gradient_norms_of_each_term_over_their_sum():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([3.0], requires_grad=True)
    terms = {"one": 3 * a.sum(), "two": (a**2).sum() + 0 * b.sum(), "three": 4 * b.sum()}
    shares = gradient_shares(terms, {"a": a, "b": b})
    # d one/da = (3, 3): norm 3 sqrt 2; d two/da = 2a = (2, 4): norm sqrt 20; d three/da = 0.
    norm_one, norm_two = 3 * 2**0.5, 20**0.5
    assert shares["a"]["one"] == pytest.approx(norm_one / (norm_one + norm_two))
    assert shares["a"]["two"] == pytest.approx(norm_two / (norm_one + norm_two))
    assert shares["a"]["three"] == 0.0
    assert shares["b"] == pytest.approx({"one": 0.0, "two": 0.0, "three": 1.0})
    sum(terms.values()).backward()  # the graphs are kept for the real backward pass
    assert a.grad is not None


def test_a_parameter_no_term_reaches_has_zero_shares():
    a, c = torch.ones(2, requires_grad=True), torch.ones(1, requires_grad=True)
    assert gradient_shares({"t": a.sum(), "constant": torch.tensor(1.0)}, {"c": c}) == {
        "c": {"t": 0.0, "constant": 0.0}
    }


def test_kernel_statistics_compare_the_maps_before_and_after_the_transform():
    raw = torch.zeros(1, 1, 2, 2)
    student_kernel = torch.tensor([0.1, 0.3, 0.5, 0.7], dtype=torch.float64).view(1, 1, 2, 2)
    teacher = torch.tensor([0.0, 0.4, 0.4, 0.8], dtype=torch.float64).view(1, 1, 2, 2)
    transformed = teacher + 0.1
    stats = kernel_statistics(PointFeatures(raw, raw, transformed, teacher, student_kernel))
    assert stats["loss_before_transform"].item() == pytest.approx((0.01 + 0.01 + 0.01 + 0.01) / 4)
    assert stats["loss_after_transform"].item() == pytest.approx(0.01)
    assert stats["student_mean"].item() == pytest.approx(0.4)
    # unbiased standard deviation: deviations -0.3, -0.1, 0.1, 0.3
    assert stats["student_spread"].item() == pytest.approx((0.2 / 3) ** 0.5)
    assert stats["teacher_spread"].item() == pytest.approx(((0.16 + 0 + 0 + 0.16) / 3) ** 0.5)
    # without a transform the student side is the map itself
    plain = kernel_statistics(PointFeatures(raw, raw, student_kernel, teacher))
    assert plain["loss_before_transform"] == plain["loss_after_transform"] == stats["loss_before_transform"]
