"""The feature distiller on its own (no Lightning): validation, the pipeline, the losses, and a second method."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from pkkd_lightning.distill import FeatureDistiller, KernelDistiller, PointFeatures, default_tap_paths
from pkkd_lightning.distill.distiller import head_key, identity_1x1
from pkkd_lightning.distill.kernels import GaussianKernel, LaplaceKernel
from pkkd_lightning.distill.losses import point_matching_loss
from pkkd_lightning.models import build_model

POINTS = ["layer1.2.conv2", "layer2.2.conv2", "layer3.2.conv2"]


@pytest.fixture
def twins():
    torch.manual_seed(0)
    return build_model("resnet20", "adder", 10), build_model("resnet20", "conv", 10)


@pytest.fixture(scope="module")
def x():
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_heads_are_keyed_by_path_and_the_networks_are_not_registered(twins):
    student, teacher = twins
    distiller = KernelDistiller(student, teacher, POINTS)
    assert (
        list(distiller.heads) == [head_key(p) for p in POINTS] == ["layer1:2:conv2", "layer2:2:conv2", "layer3:2:conv2"]
    )
    own = {id(p) for p in distiller.parameters()}
    assert not own & {id(p) for p in [*student.parameters(), *teacher.parameters()]}
    assert sum(p.numel() for p in distiller.parameters()) == sum(c * c + c for c in (16, 32, 64))


@pytest.mark.parametrize(
    "points,message",
    [
        ([], "non-empty"),
        ("layer1.2.conv2", "non-empty list"),
        (["layer9.conv"], "not an nn.Conv2d"),
        (["conv1"], "must be an adder layer in the ANN"),
    ],
)
def test_bad_points_are_refused_once_at_construction(twins, points, message):
    with pytest.raises(ValueError, match=message):
        KernelDistiller(*twins, points)


def test_a_teacher_convolution_with_a_bias_is_refused():
    student = nn.Sequential(build_model("resnet20", "adder", 10).layer1[0].conv1)
    teacher = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=True))
    with pytest.raises(ValueError, match="bias"):
        KernelDistiller(student, teacher, ["0"])


def test_forward_runs_both_networks_and_matches_the_kernels_point_by_point(twins, x):
    student, teacher = twins
    distiller = KernelDistiller(student, teacher, POINTS, sigma_ann=300.0, sigma_cnn=4.0)
    out = distiller(x, train_teacher=True, return_features=True)
    torch.testing.assert_close(out.student_logits, student(x))
    torch.testing.assert_close(out.teacher_logits, teacher(x))
    assert list(out.losses) == list(out.features) == POINTS
    for path, features in out.features.items():
        torch.testing.assert_close(features.student, torch.exp(features.student_raw / 300.0))  # identity transform
        assert features.teacher.shape == features.student.shape == features.student_raw.shape
        torch.testing.assert_close(out.losses[path], point_matching_loss(features.student, features.teacher))
    assert not distiller.student_taps.active and not distiller.teacher_taps.active
    assert distiller(x, train_teacher=True).features is None


def test_a_fixed_teacher_builds_no_graph_and_the_loss_never_reaches_the_teacher(twins, x):
    student, teacher = twins
    distiller = KernelDistiller(student, teacher, POINTS)
    frozen = distiller(x, train_teacher=False)
    assert not frozen.teacher_logits.requires_grad
    joint = distiller(x, train_teacher=True)
    sum(joint.losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.get_submodule(POINTS[0]).weight.grad is not None


def test_the_distance_ablation_and_no_transform_switch_what_they_say(twins, x):
    distiller = KernelDistiller(*twins, POINTS, feature_space="distance", linear_transform=False, sigma_ann=50.0)
    head = distiller.heads[head_key(POINTS[0])]
    assert isinstance(head.transform, nn.Identity)
    assert isinstance(head.student_kernel, LaplaceKernel) and isinstance(head.teacher_kernel, GaussianKernel)
    features = distiller(x, train_teacher=False, return_features=True).features[POINTS[0]]
    torch.testing.assert_close(features.student, -features.student_raw / 50.0)
    with pytest.raises(ValueError, match="feature_space"):
        KernelDistiller(*twins, POINTS, feature_space="raw")


def test_identity_transform_draws_no_random_numbers():
    state = torch.get_rng_state()
    conv = identity_1x1(8)
    assert torch.equal(torch.get_rng_state(), state)
    y = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(conv(y), y)


def test_a_standardized_transform_input_is_an_affine_map_of_the_laplace_map_that_starts_at_zero(twins, x):
    distiller = KernelDistiller(*twins, POINTS, sigma_ann=300.0, transform_input="standardized")
    assert sum(p.numel() for p in distiller.parameters()) == sum(c * c + c for c in (16, 32, 64))  # same rho
    head = distiller.heads[head_key(POINTS[0])]
    start = distiller(x, train_teacher=False, return_features=True).features[POINTS[0]]
    assert torch.equal(start.student, torch.zeros_like(start.student))
    torch.testing.assert_close(start.student_untransformed, torch.exp(start.student_raw / 300.0))
    gen = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(16, 16, generator=gen), torch.randn(16, generator=gen)
    with torch.no_grad():
        head.transform[1].weight.copy_(weight.view(16, 16, 1, 1))
        head.transform[1].bias.copy_(bias)
    features = distiller(x, train_teacher=False, return_features=True).features[POINTS[0]]
    g = features.student_untransformed.double()
    mean, var = g.mean(dim=(0, 2, 3), keepdim=True), g.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    standardized = (g - mean) / (var + 1e-5).sqrt()  # batch statistics in training mode
    expected = torch.einsum("oc,nchw->nohw", weight.double(), standardized) + bias.double().view(1, -1, 1, 1)
    torch.testing.assert_close(features.student.double(), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="transform_input.*'kernel', 'standardized'"):
        KernelDistiller(*twins, POINTS, transform_input="whitened")


class HintHead(nn.Module):
    """FitNets-style hint: a 1x1 regressor on the student's raw output against the teacher's raw output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.regressor = nn.Conv2d(channels, channels, 1)

    def forward(self, student, teacher) -> PointFeatures:
        return PointFeatures(student.output, teacher.output, self.regressor(student.output), teacher.output)


class HintDistiller(FeatureDistiller):
    def build_head(self, path, student_layer, teacher_layer):
        return HintHead(student_layer.out_channels)


def test_another_feature_distillation_method_is_one_subclass(twins, x):
    student, teacher = twins
    distiller = HintDistiller(student, teacher, default_tap_paths(student))
    out = distiller(x, train_teacher=False)
    assert list(out.losses) == POINTS and all(loss > 0 for loss in out.losses.values())
