"""The Triton kernels at layer-like sizes: compiled on a GPU, in Triton's CPU interpreter elsewhere."""

from __future__ import annotations

import pytest
import torch

from pkkd_lightning.ops import adder2d
from pkkd_lightning.ops.backends import get_backend, triton_available
from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.reference import reference_backward, reference_forward
from pkkd_lightning.ops.triton_backend import TileConfig, TritonBackend, triton_forward, triton_input_grad

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not triton_available(DEVICE), reason=f"Triton kernels do not run on {DEVICE}")


def layer_problem(in_channels: int, out_channels: int, size: tuple[int, int], geom: AdderGeometry, seed: int = 0):
    """float64 input, filters and output gradient of one layer call, on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, in_channels, *size, generator=gen, dtype=torch.float64)
    w = torch.randn(out_channels, in_channels, *geom.kernel_size, generator=gen, dtype=torch.float64) * 0.5
    g = torch.randn(2, out_channels, *geom.output_size(*size), generator=gen, dtype=torch.float64)
    return x, w, g


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.cpu().double() - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize(
    "in_channels,out_channels,geom",
    [
        (17, 70, AdderGeometry((3, 3), (1, 1), (1, 1), (1, 1))),  # partial tiles in both kernels
        (16, 33, AdderGeometry((1, 1), (2, 2), (0, 0), (1, 1))),  # a ResNet shortcut: half the pixels get no gradient
        (5, 9, AdderGeometry((3, 2), (2, 1), (2, 0), (2, 1))),  # rectangular kernel, mixed stride and dilation
    ],
)
def test_float32_layers_match_the_float64_reference(in_channels, out_channels, geom):
    x, w, g = layer_problem(in_channels, out_channels, (11, 9), geom)
    s, p, d = geom.stride, geom.padding, geom.dilation
    xg, wg = x.float().to(DEVICE).requires_grad_(), w.float().to(DEVICE).requires_grad_()
    y = adder2d(xg, wg, None, s, p, d, backend="triton")
    y.backward(g.float().to(DEVICE))
    gx_ref, gw_ref = reference_backward(g, x, w, geom)
    assert relative_error(y, reference_forward(x, w, geom)) < 1e-6
    assert relative_error(xg.grad, gx_ref) < 1e-5
    assert relative_error(wg.grad, gw_ref) < 1e-3  # the weight gradient may go through TF32 convolutions on a GPU


def test_tile_sizes_do_not_change_the_result():
    geom = AdderGeometry((3, 3), (1, 1), (1, 1), (1, 1))
    x, w, g = (t.float().to(DEVICE) for t in layer_problem(20, 24, (6, 7), geom, seed=1))
    small, large = TileConfig(16, 16, 1), TileConfig(64, 32, 4)
    torch.testing.assert_close(triton_forward(x, w, geom, small), triton_forward(x, w, geom, large), rtol=0, atol=0)
    torch.testing.assert_close(
        triton_input_grad(g, x, w, geom, small), triton_input_grad(g, x, w, geom, large), rtol=0, atol=0
    )


def test_half_precision_inputs_accumulate_in_float32():
    geom = AdderGeometry((3, 3), (1, 1), (1, 1), (1, 1))
    x, w, g = layer_problem(32, 16, (8, 8), geom, seed=2)
    y = triton_forward(x.half().to(DEVICE), w.half().to(DEVICE), geom)
    assert y.dtype == torch.float16
    # Against the fp16-rounded inputs only the final rounding to fp16 remains (~2e-4 relative); summing the 288
    # terms in a float16 accumulator instead measures ~2e-3.
    reference = reference_forward(x.half().double(), w.half().double(), geom)
    assert relative_error(y, reference) < 5e-4


def test_triton_without_gpu_or_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="backend='triton' needs"):
        adder2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3), backend="triton")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_uses_triton_on_cuda():
    assert isinstance(get_backend("auto", torch.randn(1, device="cuda")), TritonBackend)
