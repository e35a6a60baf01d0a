"""Adder2d as a drop-in for nn.Conv2d, its input validation, autocast, and AdderNet's adaptive learning rate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from pkkd_lightning.ops import Adder2d, adder2d, rescale_adder_gradients
from pkkd_lightning.ops.backends import get_backend
from pkkd_lightning.ops.native_backend import NativeBackend


def test_adder_is_a_conv_with_the_same_state_dict_and_output_shape():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
    adder = Adder2d(4, 6, 3, stride=2, padding=1)
    assert isinstance(adder, nn.Conv2d)  # by design: twins share module types' structure
    assert conv.state_dict().keys() == adder.state_dict().keys()
    adder.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 9, 7)
    assert adder(x).shape == conv(x).shape


def test_bias_is_added_per_output_channel():
    layer = Adder2d(3, 4, 3, padding=1, bias=True)
    nn.init.normal_(layer.bias)
    x = torch.randn(2, 3, 5, 5)
    without_bias = adder2d(x, layer.weight, None, padding=1)
    torch.testing.assert_close(layer(x), without_bias + layer.bias.view(1, -1, 1, 1))


def test_response_is_the_negative_l1_distance():
    layer = Adder2d(1, 1, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[[[1.0, -1.0], [0.5, 2.0]]]]))
    x = torch.tensor([[[[0.0, 0.0], [1.0, 1.0]]]])
    assert layer(x).item() == pytest.approx(-(1 + 1 + 0.5 + 1))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"groups": 3}, "groups"),
        ({"padding": "same"}, "padding"),
        ({"padding_mode": "reflect"}, "padding_mode"),
        ({"eta": -1.0}, "eta"),
        ({"backend": "cuda-magic"}, "backend"),
    ],
)
def test_bad_constructor_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Adder2d(4, 4, 3, **kwargs)


@pytest.mark.parametrize(
    "x,error,match",
    [
        (torch.randn(3, 5, 5), ValueError, "4-D"),
        (torch.randint(0, 5, (1, 3, 5, 5)), TypeError, "floating-point"),
        (torch.randn(1, 2, 5, 5), ValueError, "in_channels=3"),
        (torch.randn(1, 3, 2, 2), ValueError, "kernel_size"),
        (torch.randn(1, 3, 5, 5, dtype=torch.float64), TypeError, "dtype"),
    ],
)
def test_bad_input_raises_a_clear_error(x, error, match):
    with pytest.raises(error, match=match):
        Adder2d(3, 4, 3)(x)


def test_autocast_computes_the_distance_in_float32():
    layer = Adder2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, layer(x.bfloat16().float()))


def test_auto_uses_the_native_kernels_for_cpu_floats():
    assert isinstance(get_backend("auto", torch.randn(1)), NativeBackend)
    assert not isinstance(get_backend("auto", torch.randn(1).half()), NativeBackend)


def test_adaptive_rescaling_sets_the_norm_to_eta_sqrt_k():
    model = nn.Sequential(Adder2d(3, 4, 3, eta=0.2), nn.BatchNorm2d(4), Adder2d(4, 5, 1, eta=None), nn.Conv2d(5, 2, 1))
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    untouched = model[2].weight.grad.clone(), model[3].weight.grad.clone()
    direction = model[0].weight.grad / model[0].weight.grad.norm()
    assert rescale_adder_gradients(model) == 1
    grad = model[0].weight.grad
    assert grad.norm().item() == pytest.approx(0.2 * math.sqrt(grad.numel()), rel=1e-6)
    torch.testing.assert_close(grad / grad.norm(), direction)
    torch.testing.assert_close(model[2].weight.grad, untouched[0])  # eta=None: off
    torch.testing.assert_close(model[3].weight.grad, untouched[1])  # plain conv: never touched


def test_adaptive_rescaling_keeps_a_zero_gradient_finite():
    layer = Adder2d(2, 2, 1)
    layer.weight.grad = torch.zeros_like(layer.weight)
    rescale_adder_gradients(layer)
    assert torch.equal(layer.weight.grad, torch.zeros_like(layer.weight))
