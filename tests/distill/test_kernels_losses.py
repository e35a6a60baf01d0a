"""PKKD kernels against float64 direct computations from patches, the sigma policy, and the loss terms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pkkd_lightning.distill import FeatureTaps
from pkkd_lightning.distill.kernels import GaussianKernel, LaplaceKernel, RunningScale
from pkkd_lightning.distill.losses import LossWeights, feature_matching_loss, point_matching_loss, soft_logit_loss
from pkkd_lightning.ops import Adder2d


def tapped(layer: nn.Conv2d, x: torch.Tensor):
    model = nn.Sequential(layer)
    taps = FeatureTaps(model, ["0"])
    with taps:
        model(x)
    return taps.pop()["0"]


def patch_distances(layer: nn.Conv2d, x: torch.Tensor, p: int) -> torch.Tensor:
    """||x_patch - f||_p^p per (image, filter, position), straight from unfolded patches."""
    cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (N, k, L)
    diff = cols.unsqueeze(1) - layer.weight.reshape(1, layer.out_channels, -1, 1)
    out = diff.abs().pow(p).sum(2)
    return out.reshape(x.shape[0], layer.out_channels, *tapped(layer, x).output.shape[2:])


def test_gaussian_kernel_matches_direct_float64_computation():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    sigma = 2.5
    expected = torch.exp(-patch_distances(conv, x, 2) / (2 * sigma**2))
    torch.testing.assert_close(GaussianKernel(sigma)(tapped(conv, x)), expected)


def test_gaussian_kernel_under_bf16_autocast_keeps_float32_accuracy():
    torch.manual_seed(3)
    conv = nn.Conv2d(16, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 16, 6, 6) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        record = tapped(conv, x)
    assert record.output.dtype == torch.float32
    distance = GaussianKernel.squared_distance(record)
    expected = patch_distances(conv.double(), x.double(), 2)
    assert ((distance.double() - expected).abs().max() / expected.abs().max()) < 1e-5


def test_laplace_kernel_matches_direct_float64_computation():
    torch.manual_seed(1)
    adder = Adder2d(3, 4, 3, padding=1).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    sigma = 7.0
    expected = torch.exp(-patch_distances(adder, x, 1) / sigma)
    torch.testing.assert_close(LaplaceKernel(sigma)(tapped(adder, x)), expected)


def test_running_mean_sigma_keeps_realistic_distances_away_from_underflow():
    """Distances of a few hundred (a 64-channel 3x3 adder layer) underflow exp(-d) but not exp(-d / mean d)."""
    torch.manual_seed(2)
    adder = Adder2d(64, 8, 3, padding=1)
    x = torch.randn(2, 64, 6, 6)
    record = tapped(adder, x)
    assert (-record.output).min() > 150
    fixed = LaplaceKernel(sigma=1.0)(record)
    assert fixed.max() == 0  # no signal, no gradient: the failure the policy prevents
    adaptive = LaplaceKernel()(record)
    assert 0.05 < adaptive.mean() < 0.9
    assert adaptive.min() > 0


def test_running_scale_initialises_then_averages_and_freezes_in_eval():
    scale = RunningScale(momentum=0.5)
    scale(torch.full((4,), 10.0))
    assert scale.scale.item() == pytest.approx(10.0)
    scale(torch.full((4,), 20.0))
    assert scale.scale.item() == pytest.approx(15.0)
    scale.eval()
    out = scale(torch.full((2,), 30.0))
    assert scale.scale.item() == pytest.approx(15.0)
    assert out.item() == pytest.approx(15.0)  # the frozen scale, which the kernel divides by


@pytest.mark.parametrize("sigma", ["median", 0.0, -1.0])
def test_bad_sigma_is_rejected(sigma):
    with pytest.raises(ValueError, match="sigma"):
        GaussianKernel(sigma)


def test_kernels_without_nonlinearity_return_the_scaled_distance():
    record = tapped(Adder2d(2, 3, 1), torch.randn(1, 2, 3, 3))
    torch.testing.assert_close(LaplaceKernel(4.0, apply_kernel=False)(record), -record.output / 4.0)


def test_soft_logit_loss_matches_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]], dtype=torch.float64)
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]], dtype=torch.float64)
    tau = 2.0
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        zs = sum(math.exp(v / tau) for v in s_row)
        zt = sum(math.exp(v / tau) for v in t_row)
        for s, t in zip(s_row, t_row):
            pt, ps = math.exp(t / tau) / zt, math.exp(s / tau) / zs
            total += pt * (math.log(pt) - math.log(ps))
    expected = tau**2 * total / 2
    assert soft_logit_loss(student, teacher, tau).item() == pytest.approx(expected, rel=1e-12)
    assert soft_logit_loss(teacher, teacher, tau).item() == pytest.approx(0.0, abs=1e-12)


def test_soft_logit_loss_does_not_train_the_teacher():
    student, teacher = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True)
    soft_logit_loss(student, teacher, 4.0).backward()
    assert student.grad is not None and teacher.grad is None


def test_feature_matching_loss_is_the_sum_of_per_point_mses_with_teacher_detached():
    s1, s2 = torch.ones(1, 2, 2, 2, requires_grad=True), torch.zeros(1, 1, 3, 3, requires_grad=True)
    t1, t2 = torch.full((1, 2, 2, 2), 3.0, requires_grad=True), torch.full((1, 1, 3, 3), 0.5, requires_grad=True)
    per_point = {"a": point_matching_loss(s1, t1), "b": point_matching_loss(s2, t2)}
    assert per_point["a"].item() == pytest.approx(4.0) and per_point["b"].item() == pytest.approx(0.25)
    loss = feature_matching_loss(per_point)
    assert loss.item() == pytest.approx(4.0 + 0.25)
    loss.backward()
    assert t1.grad is None and t2.grad is None
    with pytest.raises(ValueError, match="differ"):
        point_matching_loss(s1, t2)
    with pytest.raises(ValueError, match="at least one"):
        feature_matching_loss({})


@pytest.mark.parametrize(
    "weights,message",
    [
        ({"beta": 1.5}, r"model\.beta"),
        ({"beta": -0.1}, r"model\.beta"),
        ({"tau": 0.0}, r"model\.tau"),
        ({"feature_weight": -1.0}, r"model\.feature_weight"),
        ({"beta": float("nan")}, r"model\.beta"),
    ],
)
def test_loss_weights_out_of_range_are_refused_naming_the_key(weights, message):
    with pytest.raises(ValueError, match=message):
        LossWeights(**weights)
    with pytest.raises(ValueError, match="tau"):
        soft_logit_loss(torch.zeros(1, 2), torch.zeros(1, 2), tau=0)
