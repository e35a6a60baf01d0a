"""Every adder backend against the float64 reference, and the reference against a hand-written loop."""

from __future__ import annotations

import itertools

import pytest
import torch

from pkkd_lightning.ops import adder2d
from pkkd_lightning.ops.backends import triton_available
from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.reference import reference_backward, reference_forward

# On a machine without CUDA the Triton kernels run in Triton's CPU interpreter (tests/conftest.py).
FAST_BACKENDS = ("unfold", "fused", "native") + (("triton",) if triton_available("cpu") else ())
CUDA_BACKENDS = ("unfold", "fused", "triton", "auto")
# (batch, kernel, stride, padding): batch 1 and >1, kernel 1 and 3, stride 1 and 2, padding 0 and 1.
GRID = list(itertools.product((1, 3), (1, 3), (1, 2), (0, 1)))


def loop_adder(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, stride: int, padding: int):
    """AdderNet eqs. 2, 5, 6 written as explicit loops over every output position: the ground truth."""
    xp = torch.nn.functional.pad(x, (padding,) * 4)
    n_, _, h, wd = xp.shape
    o_, _, k, _ = w.shape
    out_h, out_w = (h - k) // stride + 1, (wd - k) // stride + 1
    y = torch.zeros(n_, o_, out_h, out_w, dtype=x.dtype)
    gxp, gw = torch.zeros_like(xp), torch.zeros_like(w)
    for n, o, i, j in itertools.product(range(n_), range(o_), range(out_h), range(out_w)):
        patch = xp[n, :, i * stride : i * stride + k, j * stride : j * stride + k]
        y[n, o, i, j] = -(patch - w[o]).abs().sum()
        gw[o] += g[n, o, i, j] * (patch - w[o])  # eq. 5: X - F
        gxp[n, :, i * stride : i * stride + k, j * stride : j * stride + k] += g[n, o, i, j] * (w[o] - patch).clamp(
            -1, 1
        )  # eq. 6: HardTanh(F - X)
    return y, gxp[:, :, padding : padding + x.shape[2], padding : padding + x.shape[3]], gw


def run_backend(backend: str, x, w, g, stride, padding, chunk_bytes=None):
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = adder2d(xg, wg, None, stride, padding, backend=backend, chunk_bytes=chunk_bytes)
    y.backward(g)
    return y.detach(), xg.grad, wg.grad


def random_problem(batch, kernel, stride, padding, dtype=torch.float64, seed=0, channels=(3, 5), size=(7, 6)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels[0], *size, generator=gen, dtype=dtype)
    w = torch.randn(channels[1], channels[0], kernel, kernel, generator=gen, dtype=dtype)
    geom = AdderGeometry((kernel, kernel), (stride, stride), (padding, padding), (1, 1))
    out_h, out_w = geom.output_size(*size)
    g = torch.randn(batch, channels[1], out_h, out_w, generator=gen, dtype=dtype)
    return x, w, g, geom


@pytest.mark.parametrize("batch,kernel,stride,padding", GRID[::3])
def test_reference_matches_explicit_loops(batch, kernel, stride, padding):
    x, w, g, geom = random_problem(batch, kernel, stride, padding, channels=(2, 3), size=(5, 4))
    y_loop, gx_loop, gw_loop = loop_adder(x, w, g, stride, padding)
    gx_ref, gw_ref = reference_backward(g, x, w, geom)
    torch.testing.assert_close(reference_forward(x, w, geom), y_loop)
    torch.testing.assert_close(gx_ref, gx_loop)
    torch.testing.assert_close(gw_ref, gw_loop)


def test_adder_rules_differ_from_autograd_of_abs():
    """The weight gradient is the full-precision X - F, not autograd's sign(X - F): a wrong rule must show."""
    x, w, g, geom = random_problem(2, 3, 1, 1)
    _, _, gw = run_backend("native", x, w, g, 1, 1)
    wa = w.clone().requires_grad_()
    reference_forward(x, wa, geom).backward(g)
    assert not torch.allclose(gw, wa.grad, atol=1e-3)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("batch,kernel,stride,padding", GRID)
def test_backend_matches_reference_float64(backend, batch, kernel, stride, padding):
    x, w, g, geom = random_problem(batch, kernel, stride, padding, seed=batch * 7 + kernel + stride + padding)
    y, gx, gw = run_backend(backend, x, w, g, stride, padding)
    gx_ref, gw_ref = reference_backward(g, x, w, geom)
    torch.testing.assert_close(y, reference_forward(x, w, geom), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_float32_matches_float64_reference(backend):
    """float32 at a realistic width (many output columns, >1 SIMD vector, a partial tile, dilation)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 13, 21, generator=gen, dtype=torch.float64)
    w = torch.randn(19, 16, 3, 3, generator=gen, dtype=torch.float64) * 0.5
    geom = AdderGeometry((3, 3), (1, 1), (2, 2), (2, 2))
    g = torch.randn(2, 19, *geom.output_size(13, 21), generator=gen, dtype=torch.float64)
    xg, wg = x.float().requires_grad_(), w.float().requires_grad_()
    y = adder2d(xg, wg, padding=2, dilation=2, backend=backend)
    y.backward(g.float())
    gx_ref, gw_ref = reference_backward(g, x, w, geom)
    scale = reference_forward(x, w, geom).abs().max()
    assert ((y.double() - reference_forward(x, w, geom)).abs().max() / scale) < 1e-6
    assert ((xg.grad.double() - gx_ref).norm() / gx_ref.norm()) < 1e-5
    assert ((wg.grad.double() - gw_ref).norm() / gw_ref.norm()) < 1e-5


@pytest.mark.parametrize("backend", ("unfold", "fused"))
def test_chunk_size_does_not_change_results(backend):
    x, w, g, _ = random_problem(5, 3, 2, 1, seed=11)
    whole = run_backend(backend, x, w, g, 2, 1, chunk_bytes=None)
    one_image_chunks = run_backend(backend, x, w, g, 2, 1, chunk_bytes=1)
    for a, b in zip(whole, one_image_chunks):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_no_input_gradient_requested_computes_only_the_weight_gradient():
    x, w, g, geom = random_problem(2, 3, 1, 1)
    wg = w.clone().requires_grad_()
    adder2d(x, wg, padding=1).backward(g)
    torch.testing.assert_close(wg.grad, reference_backward(g, x, w, geom)[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_cuda_backend_matches_cpu_reference(backend):
    x, w, g, geom = random_problem(3, 3, 2, 1, dtype=torch.float32, channels=(8, 16), size=(12, 10))
    y, gx, gw = run_backend(backend, x.cuda(), w.cuda(), g.cuda(), 2, 1)
    gx_ref, gw_ref = reference_backward(g.double(), x.double(), w.double(), geom)
    torch.testing.assert_close(y.cpu().double(), reference_forward(x.double(), w.double(), geom), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(gx.cpu().double(), gx_ref, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(gw.cpu().double(), gw_ref, rtol=1e-4, atol=1e-3)
