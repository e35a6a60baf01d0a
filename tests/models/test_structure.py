"""Reading a network's structure off one forward pass (pkkd_lightning.models.structure): default distillation
points for any network, adder layers without a BatchNorm, and the distillation-point check."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from pkkd_lightning.distill.taps import default_tap_paths, patch_sq_norms
from pkkd_lightning.models import build_model
from pkkd_lightning.models.structure import (
    check_distill_points,
    default_distill_points,
    trace_layers,
    unnormalized_adder_layers,
)


@pytest.mark.parametrize(
    ("spec", "points"),
    [
        ("resnet20", ["layer1.2.conv2", "layer2.2.conv2", "layer3.2.conv2"]),
        ("timm:resnet10t", ["layer1.0.conv2", "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2"]),
        ("timm:mobilenetv3_small_050", ["blocks.0.0.conv_pw", "blocks.1.1.conv_pwl", "blocks.3.1.conv_pwl",
                                        "blocks.5.0.conv"]),
    ],
)  # fmt: skip
def test_default_points_are_the_last_main_path_adder_layer_of_each_stage(spec: str, points: list[str]) -> None:
    ann = build_model(spec, "adder", 10)
    assert default_tap_paths(ann) == points
    assert default_distill_points(ann, trace_layers(ann)) == points  # the generic rule agrees on ResNet-20


def test_a_network_without_stages_is_tapped_before_each_change_of_resolution() -> None:
    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    net = nn.Sequential(*block(3, 8, 1), *block(8, 8, 1), *block(8, 16, 2), *block(16, 16, 1), nn.Flatten())
    ann = build_model_from(net)
    assert default_tap_paths(ann) == ["3", "9"]


def build_model_from(net: nn.Module) -> nn.Module:
    from pkkd_lightning.models.adderize import adderize

    return adderize(net, keep=["0"])


def test_adder_layers_without_a_batchnorm_are_named() -> None:
    ann = build_model("timm:mobilenetv3_small_050", "adder", 10)
    found = unnormalized_adder_layers(trace_layers(ann))
    assert found and all(".se." in path or path == "conv_head" for path in found)  # squeeze-excite, 1x1 head
    assert unnormalized_adder_layers(trace_layers(build_model("resnet20", "adder", 10))) == []


def test_tracing_leaves_the_model_and_the_random_stream_alone() -> None:
    ann = build_model("resnet20", "adder", 10).train()
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    torch.manual_seed(5)
    trace_layers(ann)
    assert torch.equal(torch.rand(1), torch.manual_seed(5) and torch.rand(1))
    assert ann.training and all(torch.equal(before[k], v) for k, v in ann.state_dict().items())


def test_distill_points_are_checked_against_the_candidates() -> None:
    ann = build_model("timm:resnet10t", "adder", 10)
    check_distill_points(ann, ["layer1.0.conv2"])
    with pytest.raises(ValueError, match=r"\['conv1.0'\] are not bias-free adder layers.*candidates: conv1.3"):
        check_distill_points(ann, ["conv1.0"])


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_patch_norms_of_a_grouped_convolution_are_per_group(groups: int) -> None:
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=groups, bias=False).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    norms = patch_sq_norms(conv, x)
    patches = nn.functional.unfold(x, 3, padding=1).reshape(2, groups, 4 // groups * 9, 25)
    per_group = patches.square().sum(2).reshape(2, groups, 5, 5)
    expected = per_group.repeat_interleave(8 // groups, dim=1) if groups > 1 else per_group
    torch.testing.assert_close(norms, expected)
