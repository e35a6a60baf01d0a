"""Initialisation: the official AdderNet code's by default, He et al.'s one option away, and what it changes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from pkkd_lightning.models import INIT_SCHEMES, build_model
from pkkd_lightning.ops import Adder2d


def adder_weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, Adder2d)])


def test_official_adder_filters_are_standard_normal():
    torch.manual_seed(0)
    weights = adder_weights(build_model("resnet20", "adder", 10, init="official"))
    assert weights.numel() > 200_000
    assert abs(weights.mean().item()) < 0.01 and weights.std().item() == pytest.approx(1.0, abs=0.01)


def test_kaiming_copies_he_initialisation_into_the_adder_layers():
    torch.manual_seed(0)
    model = build_model("resnet20", "adder", 10, init="kaiming")
    layer = model.layer1[0].conv1
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.05)


@pytest.mark.parametrize("layer_type", ["conv", "adder"])
def test_official_cifar_stem_and_classifier_keep_pytorchs_default(layer_type):
    torch.manual_seed(0)
    official, kaiming = (build_model("resnet20", layer_type, 10, init=init) for init in ("official", "kaiming"))
    # PyTorch's default for a conv: uniform(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in); He fan-out: sqrt(2/fan_out).
    assert official.fc.weight.abs().max().item() <= 1 / math.sqrt(64)
    assert kaiming.fc.weight.std().item() == pytest.approx(math.sqrt(2 / 10), rel=0.15)
    assert official.conv1.weight.abs().max().item() <= 1 / math.sqrt(27)
    for bn in (official.bn1, official.fc_bn):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))


def channel_correlation(layer: nn.Module, x: torch.Tensor) -> float:
    """Mean |correlation| between the output channels of ``layer`` over images and positions."""
    with torch.no_grad():
        y = layer(x).transpose(0, 1).flatten(1)
    corr = torch.corrcoef(y)
    off_diagonal = corr[~torch.eye(len(corr), dtype=torch.bool)]
    return off_diagonal.abs().mean().item()


def test_official_initialisation_lets_the_first_adder_layer_start_with_distinct_channels():
    torch.manual_seed(0)
    x = torch.relu(torch.randn(8, 16, 16, 16))  # what a stem + BN + ReLU hands the first adder layer
    kaiming = channel_correlation(build_model("resnet20", "adder", 10, init="kaiming").layer1[0].conv1, x)
    official = channel_correlation(build_model("resnet20", "adder", 10, init="official").layer1[0].conv1, x)
    assert kaiming > 0.95 and official < 0.8, (kaiming, official)


@pytest.mark.parametrize("init", INIT_SCHEMES)
def test_twins_share_keys_and_parameter_counts_under_every_init(init):
    cnn, ann = build_model("resnet20", "conv", 10, init=init), build_model("resnet20", "adder", 10, init=init)
    assert cnn.state_dict().keys() == ann.state_dict().keys()
    assert sum(p.numel() for p in cnn.parameters()) == sum(p.numel() for p in ann.parameters())


def test_an_unknown_init_is_refused():
    with pytest.raises(ValueError, match="'official', 'kaiming'"):
        build_model("resnet20", "adder", 10, init="xavier")
