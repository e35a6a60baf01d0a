"""Grouped and depthwise adder layers: every backend, both grouped paths, against a per-group float64 reference."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from pkkd_lightning.ops import Adder2d, adder2d, grouped, rescale_adder_gradients
from pkkd_lightning.ops.backends import fused_available, get_backend
from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.grouped import PerGroupBackend, VectorisedGroupsBackend, grouped_backend
from pkkd_lightning.ops.native_backend import NativeBackend
from pkkd_lightning.ops.reference import reference_backward, reference_forward

# (C_in, C_out, groups): ungrouped, 2 and 4 groups, depthwise, depthwise with channel multiplier 2.
CHANNELS = [(3, 5, 1), (4, 6, 2), (8, 8, 4), (6, 6, 6), (4, 8, 4)]
# (kernel, stride, padding, dilation): 3x3, stride 2, 1x1, dilation 2, non-square everything.
GEOMETRIES = [((3, 3), 1, 1, 1), ((3, 3), 2, 1, 1), ((1, 1), 2, 0, 1), ((3, 3), 1, 2, 2), ((3, 2), (2, 1), (1, 0), 1)]
#: name -> (backend, VECTORISE_MAX_GROUP_CHANNELS): the other CPU backends group by group, ``native`` in its own
#: grouped and depthwise kernels, and the vectorised path (the same plain torch operations whatever the backend, so
#: one backend is enough for it).
IMPLEMENTATIONS = {
    "reference": ("reference", 0),
    "unfold": ("unfold", 0),
    "native": ("native", 0),
    "fused": ("fused", 0),
    "vectorised": ("unfold", 10**6),
}


def force_path(monkeypatch: pytest.MonkeyPatch, vectorised: bool) -> None:
    """Send every grouped layer down one path (``reference`` always goes group by group)."""
    monkeypatch.setattr(grouped, "VECTORISE_MAX_GROUP_CHANNELS", 10**6 if vectorised else 0)


@pytest.fixture(params=list(IMPLEMENTATIONS))
def backend(request, monkeypatch) -> Iterator[str]:
    """A backend name, with the grouped path forced; ``fused`` skipped where torch.compile does not work."""
    name, threshold = IMPLEMENTATIONS[request.param]
    if name == "fused" and not fused_available("cpu"):
        pytest.skip("torch.compile is unusable here")
    monkeypatch.setattr(grouped, "VECTORISE_MAX_GROUP_CHANNELS", threshold)
    # Each new (per-group) weight shape may cost the fused kernels a recompilation; this module makes dozens.
    with torch._dynamo.config.patch(recompile_limit=64):
        yield name


def per_group_reference(x, w, g, groups: int, geom: AdderGeometry):
    """Ground truth: the ungrouped reference (AdderNet eqs. 2, 5, 6) on each group's channels, concatenated."""
    cin, cout = x.shape[1] // groups, w.shape[0] // groups
    ys, gxs, gws = [], [], []
    for j in range(groups):
        xs, ws, gs = x[:, j * cin : (j + 1) * cin], w[j * cout : (j + 1) * cout], g[:, j * cout : (j + 1) * cout]
        ys.append(reference_forward(xs, ws, geom))
        gx, gw = reference_backward(gs, xs, ws, geom)
        gxs.append(gx)
        gws.append(gw)
    return torch.cat(ys, 1), torch.cat(gxs, 1), torch.cat(gws, 0)


def grouped_problem(channels, geometry, dtype=torch.float64, batch=2, size=(7, 6), seed=0):
    (cin, cout, groups), (kernel, stride, padding, dilation) = channels, geometry
    geom = AdderGeometry(kernel, *(_pair(v) for v in (stride, padding, dilation)))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, *size, generator=gen, dtype=dtype)
    w = torch.randn(cout, cin // groups, *kernel, generator=gen, dtype=dtype)
    g = torch.randn(batch, cout, *geom.output_size(*size), generator=gen, dtype=dtype)
    return x, w, g, geom


def run_grouped(backend, x, w, g, groups, geom):
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = adder2d(xg, wg, None, geom.stride, geom.padding, geom.dilation, groups, backend=backend)
    y.backward(g)
    return y.detach(), xg.grad, wg.grad


@pytest.mark.parametrize("channels", CHANNELS, ids=lambda c: "in{}-out{}-g{}".format(*c))
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_grouped_backend_matches_per_group_reference(backend, channels, geometry):
    x, w, g, geom = grouped_problem(channels, geometry)
    expected = per_group_reference(x, w, g, channels[2], geom)
    for got, want, name in zip(run_grouped(backend, x, w, g, channels[2], geom), expected, ("y", "dx", "dw")):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


def test_per_group_reference_is_adder_rules_on_explicit_loops():
    """Depthwise 1-D check of the yardstick itself: dW = sum G (X - F), dX = sum G HardTanh(F - X), per channel."""
    x, w, g, geom = grouped_problem((2, 4, 2), ((1, 2), 1, 0, 1), size=(1, 3))
    y, gx, gw = per_group_reference(x, w, g, 2, geom)
    for n, o, j in itertools.product(range(2), range(4), range(2)):
        patch, f = x[n, o // 2, 0, j : j + 2], w[o, 0, 0]
        assert y[n, o, 0, j] == pytest.approx(-(patch - f).abs().sum().item())
    want_gw = torch.zeros_like(w)
    want_gx = torch.zeros_like(x)
    for n, o, j in itertools.product(range(2), range(4), range(2)):
        c = o // 2
        want_gw[o, 0, 0] += g[n, o, 0, j] * (x[n, c, 0, j : j + 2] - w[o, 0, 0])
        want_gx[n, c, 0, j : j + 2] += g[n, o, 0, j] * (w[o, 0, 0] - x[n, c, 0, j : j + 2]).clamp(-1, 1)
    torch.testing.assert_close(gw, want_gw)
    torch.testing.assert_close(gx, want_gx)


def test_weight_gradient_alone_matches_reference(backend):
    x, w, g, geom = grouped_problem((6, 12, 6), ((3, 3), 1, 1, 1))
    wg = w.clone().requires_grad_()
    adder2d(x, wg, padding=1, groups=6, backend=backend).backward(g)
    torch.testing.assert_close(wg.grad, per_group_reference(x, w, g, 6, geom)[2])


def test_float32_depthwise_matches_float64_reference(backend):
    x, w, g, geom = grouped_problem((32, 32, 32), ((3, 3), 1, 1, 1), batch=3, size=(13, 11), seed=5)
    y, gx, gw = run_grouped(backend, x.float(), w.float(), g.float(), 32, geom)
    for got, want in zip((y, gx, gw), per_group_reference(x, w, g, 32, geom)):
        assert (got.double() - want).norm() / want.norm() < 1e-5


def test_grouped_backend_picks_the_path():
    x = torch.randn(1, 4, 3, 3)
    native, unfold, reference = (get_backend(name, x) for name in ("native", "unfold", "reference"))
    assert grouped_backend(native, 1, 4, 8) is native  # groups=1: the backend itself, results unchanged
    for group_channels, group_filters in ((1, 1), (2, 3), (16, 16)):  # depthwise, narrow and wide groups
        runner = grouped_backend(native, 8, group_channels, group_filters)
        assert isinstance(runner, NativeBackend) and runner.groups == 8
    assert isinstance(grouped_backend(native, 96, 1, 2), VectorisedGroupsBackend)  # depthwise with a multiplier
    assert isinstance(grouped_backend(unfold, 96, 1, 1), VectorisedGroupsBackend)
    assert isinstance(grouped_backend(unfold, 2, grouped.VECTORISE_MAX_GROUP_CHANNELS + 1, 4), PerGroupBackend)
    assert isinstance(grouped_backend(reference, 96, 1, 1), PerGroupBackend)  # the yardstick stays obvious


def test_grouped_adder_is_a_grouped_conv_twin():
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False)
    adder = Adder2d(8, 16, 3, padding=1, groups=8)
    assert adder.weight.shape == conv.weight.shape == (16, 1, 3, 3)
    adder.load_state_dict(conv.state_dict())
    x = torch.randn(2, 8, 5, 5)
    assert adder(x).shape == conv(x).shape


def test_depthwise_layer_trains_with_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(
        Adder2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, target = torch.randn(4, 8, 6, 6), torch.tensor([0, 1, 2, 0])
    start = model[0].weight.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        assert rescale_adder_gradients(model) == 1
        optimizer.step()
        assert torch.isfinite(loss)
    assert not torch.equal(model[0].weight, start)


@pytest.mark.parametrize("in_channels,out_channels,groups", [(4, 6, 4), (6, 4, 4), (4, 4, 0), (4, 4, 1.5)])
def test_bad_groups_name_groups(in_channels, out_channels, groups):
    with pytest.raises(ValueError, match="`groups`"):
        Adder2d(in_channels, out_channels, 3, groups=groups)


def test_functional_checks_groups_against_the_weight():
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="`groups`"):
        adder2d(x, torch.randn(6, 1, 3, 3), groups=4)  # 6 output channels in 4 groups
    with pytest.raises(ValueError, match="in_channels=8"):
        adder2d(x, torch.randn(4, 4, 3, 3), groups=2)  # weight has 4 channels per group, not 4 / 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("vectorised", (False, True), ids=("per_group", "vectorised"))
@pytest.mark.parametrize("backend", ("unfold", "fused", "triton", "auto"))
@pytest.mark.parametrize("channels", CHANNELS[1:], ids=lambda c: "in{}-out{}-g{}".format(*c))
def test_cuda_grouped_backend_matches_cpu_reference(backend, channels, vectorised, monkeypatch):
    force_path(monkeypatch, vectorised)
    x, w, g, geom = grouped_problem(channels, ((3, 3), 2, 1, 1), dtype=torch.float32, batch=3, size=(12, 10))
    got = run_grouped(backend, x.cuda(), w.cuda(), g.cuda(), channels[2], geom)
    for a, b in zip(got, per_group_reference(x.double(), w.double(), g.double(), channels[2], geom)):
        torch.testing.assert_close(a.cpu().double(), b, rtol=1e-4, atol=1e-3)
