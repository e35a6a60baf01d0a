"""PortableAdder2d against Adder2d (float64), its grouped layers, and portable_copy."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from pkkd_lightning.models import build_model
from pkkd_lightning.ops import Adder2d
from pkkd_lightning.ops.portable import PortableAdder2d, portable_copy

GEOMETRIES = [
    {"in_channels": 3, "out_channels": 5, "kernel_size": 3, "padding": 1},
    {
        "in_channels": 4,
        "out_channels": 6,
        "kernel_size": (3, 2),
        "stride": (2, 1),
        "padding": (1, 2),
        "dilation": (2, 1),
    },
    {"in_channels": 8, "out_channels": 16, "kernel_size": 1, "stride": 2, "bias": True},
    {"in_channels": 2, "out_channels": 3, "kernel_size": 5, "stride": 3, "padding": 2, "dilation": 2, "bias": True},
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join(f"{k}={v}" for k, v in g.items()))
@pytest.mark.parametrize("chunk_bytes", [1, 2**20], ids=["one-channel-chunks", "one-chunk"])
def test_equals_adder2d_forward(geometry: dict, chunk_bytes: int) -> None:
    adder = Adder2d(**geometry, dtype=torch.float64)
    if adder.bias is not None:
        nn.init.normal_(adder.bias)
    portable = PortableAdder2d.from_adder(adder, chunk_bytes)
    x = torch.randn(3, geometry["in_channels"], 11, 9, dtype=torch.float64)
    torch.testing.assert_close(portable(x), adder(x), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "groups", "geometry"),
    [
        (4, 6, 2, {"kernel_size": 3, "padding": 1}),
        (6, 6, 6, {"kernel_size": 3, "stride": 2, "padding": 1}),  # depthwise
        (6, 9, 3, {"kernel_size": (1, 3), "padding": (0, 2), "dilation": 2, "bias": True}),
    ],
)
def test_groups_equal_one_adder_layer_per_group(
    in_channels: int, out_channels: int, groups: int, geometry: dict
) -> None:
    portable = PortableAdder2d(
        in_channels, out_channels, groups=groups, chunk_bytes=64, dtype=torch.float64, **geometry
    )
    if portable.bias is not None:
        nn.init.normal_(portable.bias)
    x = torch.randn(2, in_channels, 7, 8, dtype=torch.float64)
    # Reference: each group is an independent groups=1 adder layer over its channel slice.
    outputs = []
    for x_group, w_group in zip(x.tensor_split(groups, 1), portable.weight.tensor_split(groups, 0)):
        layer = Adder2d(in_channels // groups, out_channels // groups, dtype=torch.float64, **geometry)
        layer.weight = nn.Parameter(w_group.detach().clone())
        if layer.bias is not None:
            layer.bias = nn.Parameter(torch.zeros_like(layer.bias))
        outputs.append(layer(x_group))
    expected = torch.cat(outputs, dim=1)
    if portable.bias is not None:
        expected = expected + portable.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(portable(x), expected, rtol=1e-12, atol=1e-10)


def test_is_not_a_conv_but_keeps_conv_state_dict_keys() -> None:
    adder = Adder2d(3, 4, 3, padding=1, bias=True)
    portable = PortableAdder2d.from_adder(adder)
    # Deliberately not an nn.Conv2d: op counters and conv-BatchNorm folding must not take it for a multiplication.
    assert not isinstance(portable, nn.Conv2d)
    assert portable.state_dict().keys() == adder.state_dict().keys()
    assert portable.weight is adder.weight and portable.bias is adder.bias


def test_portable_copy_replaces_every_adder_layer_and_leaves_the_model_alone() -> None:
    model = build_model("resnet20", "adder", 10)  # training mode: BatchNorm keeps a fresh network's outputs finite
    copy = portable_copy(model)
    assert copy.training
    adders = [path for path, m in model.named_modules() if isinstance(m, Adder2d)]
    assert adders and [path for path, m in copy.named_modules() if isinstance(m, PortableAdder2d)] == adders
    assert not any(isinstance(m, Adder2d) for m in copy.modules())
    assert isinstance(copy.conv1, nn.Conv2d) and not isinstance(copy.conv1, Adder2d)  # the stem stays a conv
    assert all(isinstance(model.get_submodule(path), Adder2d) for path in adders)
    assert copy.state_dict().keys() == model.state_dict().keys()
    assert copy.layer1[0].conv1.weight.data_ptr() != model.layer1[0].conv1.weight.data_ptr()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(copy(x), model(x), rtol=1e-4, atol=1e-4)


def test_portable_copy_of_a_bare_layer_and_of_a_shared_layer() -> None:
    assert isinstance(portable_copy(Adder2d(2, 2, 1)), PortableAdder2d)
    shared = Adder2d(2, 2, 1)
    copy = portable_copy(nn.Sequential(shared, nn.ReLU(), shared))
    assert isinstance(copy[0], PortableAdder2d) and copy[0] is copy[2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 4}, "groups"),
        ({"in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": "same"}, "padding"),
        ({"in_channels": 4, "out_channels": 4, "kernel_size": 3, "chunk_bytes": 0}, "chunk_bytes"),
    ],
)
def test_invalid_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PortableAdder2d(**kwargs)


def test_wrong_input_is_refused() -> None:
    layer = PortableAdder2d(3, 4, 5)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        layer(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer(torch.randn(1, 3, 4, 4))
