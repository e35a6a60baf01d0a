"""adderize: which layers it converts, and that each new adder layer is a faithful copy of its conv."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn

from pkkd_lightning.models import adderize, default_keep_paths
from pkkd_lightning.models.adderize import conv_paths
from pkkd_lightning.ops import Adder2d

HYPER_PARAMETERS = (
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode",
)  # fmt: skip


def _timm_resnet18() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=5)


def test_adder_layer_is_a_conv_subclass() -> None:
    # The design decision the zoo relies on: code that must tell them apart checks Adder2d first.
    assert isinstance(Adder2d(3, 4, 3), nn.Conv2d)


def test_default_keep_paths_of_a_timm_resnet_is_the_stem() -> None:
    assert default_keep_paths(_timm_resnet18()) == ["conv1"]


def test_adderize_timm_resnet_keeps_stem_and_head_and_copies_everything() -> None:
    model = _timm_resnet18()
    original = {path: model.get_submodule(path) for path in conv_paths(model)}
    fc = model.fc
    assert adderize(model) is model
    assert type(model.conv1) is nn.Conv2d and model.conv1 is original["conv1"]
    assert model.fc is fc and type(model.fc) is nn.Linear
    converted = [path for path in conv_paths(model) if isinstance(model.get_submodule(path), Adder2d)]
    assert set(converted) == set(original) - {"conv1"}
    assert "layer2.0.downsample.0" in converted
    for path in converted:
        conv, adder = original[path], model.get_submodule(path)
        for name in HYPER_PARAMETERS:
            assert getattr(adder, name) == getattr(conv, name), (path, name)
        assert (adder.bias is None) == (conv.bias is None)
        assert torch.equal(adder.weight, conv.weight) and adder.weight is not conv.weight
        assert adder.training == conv.training


def test_adderize_is_idempotent_and_honours_keep() -> None:
    model = adderize(_timm_resnet18(), keep=["conv1", "layer1.0.conv1"])
    assert type(model.layer1[0].conv1) is nn.Conv2d
    layer = model.layer1[0].conv2
    adderize(model, keep=["conv1", "layer1.0.conv1"])
    assert model.layer1[0].conv2 is layer


def test_adderize_passes_adder_arguments_and_copies_bias() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, bias=True))
    bias = model[1].bias.detach().clone()
    adderize(model, keep=[], eta=None, backend="reference")
    assert all(isinstance(m, Adder2d) and m.eta is None and m.backend == "reference" for m in model)
    assert model[0].bias is not None and model[1].bias is not None
    assert torch.equal(model[1].bias, bias)


def test_adderize_bare_conv_returns_the_adder() -> None:
    conv = nn.Conv2d(2, 3, 3, bias=False)
    adder = adderize(conv, keep=[])
    assert isinstance(adder, Adder2d) and torch.equal(adder.weight, conv.weight)


def test_adderize_errors_name_the_path() -> None:
    with pytest.raises(ValueError, match="not the string"):
        adderize(_timm_resnet18(), keep="conv1")
    with pytest.raises(ValueError, match="layer9"):
        adderize(_timm_resnet18(), keep=["conv1", "layer9"])
    reflect = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match=r"'1'.*padding_mode='reflect'.*model.keep"):
        adderize(reflect)

    class SamePadding(nn.Conv2d):  # like timm's Conv2dSame: its own forward would be dropped silently
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))

    own_forward = nn.Sequential(nn.Conv2d(3, 4, 3), SamePadding(4, 4, 3))
    with pytest.raises(ValueError, match=r"'1'.*SamePadding with its own forward.*model.keep"):
        adderize(own_forward)


def test_grouped_and_depthwise_convolutions_become_grouped_adder_layers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 16, 3, groups=8))
    adderize(model)
    assert [type(m).__name__ for m in model] == ["Conv2d", "Adder2d", "Adder2d"]
    assert (model[1].groups, model[2].groups) == (2, 8)
    assert model(torch.randn(2, 3, 9, 9)).shape == (2, 16, 3, 3)
