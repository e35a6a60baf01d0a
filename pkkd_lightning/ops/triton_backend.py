"""The fast GPU path: tiled Triton kernels that read the input in place (implicit im2col).

Forward, AdderNet eq. 2: ``Y[m, o] = -sum_k |X_m[k] - F[o, k]|`` where ``m`` runs over (image, output row,
output column) and ``k`` over (channel, kernel row, kernel column). One program owns a ``BLOCK_M x BLOCK_O``
output tile and walks ``k`` (kernel taps outside, channels inside); each step loads one input value per output
position (zero outside the image, as a zero-padded convolution sees it) and one filter value per output
channel, and adds their absolute differences to the tile. Every loaded value is reused ``BLOCK_O`` (input) or
``BLOCK_M`` (filter) times from registers.

Input gradient, AdderNet eq. 6: ``dX[n, c, h, w] = sum_{i, j, o} G[n, o, h', w'] * HardTanh(F[o, c, i, j] -
X[n, c, h, w])`` over the output positions ``(h', w')`` whose window covers ``(h, w)`` at kernel offset
``(i, j)``. One program owns a ``BLOCK_P x BLOCK_C`` tile of input pixels and channels; the input tile is
loaded once and the gradient is written once (no patch-gradient matrix, no col2im, no atomics).

Weight gradient, AdderNet eq. 5: the convolution weight gradient minus ``F * sum(G)``
(:func:`~pkkd_lightning.ops.weight_grad.adder_weight_grad`), which the GPU's convolution library computes.

Each output element is summed in a fixed order whatever the tile sizes, so results are deterministic. With
``TRITON_INTERPRET=1`` the same kernels run on CPU tensors (slowly), which is how the CPU test suite checks them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.weight_grad import adder_weight_grad

try:
    import triton
    import triton.language as tl
except ImportError:  # triton ships with the CUDA builds of torch; without it this backend is unavailable
    triton = None


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes (powers of two) and warps of one kernel launch."""

    block_rows: int
    block_cols: int
    num_warps: int


def forward_config(out_channels: int) -> TileConfig:
    """Tile of the forward kernel, from ``benchmarks/triton_tiles.py`` on an H100 (docs/benchmarks.md): 256
    positions x 16 channels for narrow layers, 128 x 32 from 32 output channels on."""
    if out_channels <= 16:
        return TileConfig(block_rows=256, block_cols=16, num_warps=4)
    return TileConfig(block_rows=128, block_cols=32, num_warps=4)


def input_grad_config(in_channels: int) -> TileConfig:
    """Tile of the input-gradient kernel (same source): 16 channels, 256 pixels up to 32 channels, else 128."""
    return TileConfig(block_rows=256 if in_channels <= 32 else 128, block_cols=16, num_warps=4)


if triton is not None:

    @triton.jit
    def _forward_kernel(
        x_ptr, wt_ptr, out_ptr,
        C, H, W, O, HO, WO, M,
        KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
        PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_O: tl.constexpr, ACC: tl.constexpr,
    ):  # fmt: skip
        """``out[n, o, ho, wo] = -sum_k |X_patch(n, ho, wo)[k] - F[o, k]|``; ``wt`` is ``F`` as (kh, kw, C, O)."""
        m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
        m_ok, o_ok = m < M, o < O
        n = m // (HO * WO)
        pos = m % (HO * WO)
        row_top = (pos // WO) * SH - PH
        col_left = (pos % WO) * SW - PW
        x_image = x_ptr + n.to(tl.int64) * C * H * W
        acc = tl.zeros((BLOCK_M, BLOCK_O), dtype=ACC)
        for i in tl.static_range(KH):  # kernel taps outside, channels inside: the tap's offsets and masks are
            row = row_top + i * DH  # computed once per tap, not once per (tap, channel)
            row_ok = m_ok & (row >= 0) & (row < H)
            for j in tl.static_range(KW):
                col = col_left + j * DW
                ok = row_ok & (col >= 0) & (col < W)
                x_tap = x_image + row * W + col
                w_tap = wt_ptr + (i * KW + j) * C * O + o
                for c in range(C):
                    xv = tl.load(x_tap + c * H * W, mask=ok, other=0.0).to(ACC)
                    wv = tl.load(w_tap + c * O, mask=o_ok, other=0.0).to(ACC)
                    acc += tl.abs(xv[:, None] - wv[None, :])
        out = out_ptr + (n.to(tl.int64) * O * HO * WO + pos)[:, None] + (o * HO * WO)[None, :]
        tl.store(out, (-acc).to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & o_ok[None, :])

    @triton.jit
    def _input_grad_kernel(
        x_ptr, wp_ptr, g_ptr, dx_ptr,
        C, H, W, O, HO, WO, P,
        KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
        PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
    ):  # fmt: skip
        """``dx[n, c, h, w] = sum_{i,j,o} G[n, o, h', w'] * HardTanh(F[o, c, i, j] - x[n, c, h, w])``;
        ``wp`` is ``F`` as (kh, kw, O, C)."""
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        p_ok, c_ok = p < P, c < C
        n = p // (H * W)
        pix = p % (H * W)
        h, w = pix // W, pix % W
        offsets = (n.to(tl.int64) * C * H * W + pix)[:, None] + (c * H * W)[None, :]
        tile_ok = p_ok[:, None] & c_ok[None, :]
        xt = tl.load(x_ptr + offsets, mask=tile_ok, other=0.0).to(ACC)
        g_image = g_ptr + n.to(tl.int64) * O * HO * WO
        acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
        for i in tl.static_range(KH):
            row_span = h + PH - i * DH  # = out_row * SH when (h, w) is under kernel row i
            out_row = row_span // SH
            row_ok = p_ok & (row_span >= 0) & (row_span == out_row * SH) & (out_row < HO)
            for j in tl.static_range(KW):
                col_span = w + PW - j * DW
                out_col = col_span // SW
                ok = row_ok & (col_span >= 0) & (col_span == out_col * SW) & (out_col < WO)
                g_pos = g_image + out_row * WO + out_col
                w_tap = wp_ptr + (i * KW + j) * O * C + c
                for o in range(O):
                    gv = tl.load(g_pos + o * HO * WO, mask=ok, other=0.0).to(ACC)
                    wv = tl.load(w_tap + o * C, mask=c_ok, other=0.0).to(ACC)
                    acc += gv[:, None] * tl.clamp(wv[None, :] - xt, -1.0, 1.0)
        tl.store(dx_ptr + offsets, acc.to(dx_ptr.dtype.element_ty), mask=tile_ok)


def _accumulator(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _geometry_args(geom: AdderGeometry) -> dict[str, int]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom.kernel_size, geom.stride, geom.padding, geom.dilation
    return {"KH": kh, "KW": kw, "SH": sh, "SW": sw, "PH": ph, "PW": pw, "DH": dh, "DW": dw}


def triton_forward(
    x: torch.Tensor, weight: torch.Tensor, geom: AdderGeometry, config: TileConfig | None = None
) -> torch.Tensor:
    """AdderNet eq. 2 on (N, C, H, W) ``x`` and (O, C, kh, kw) ``weight``: (N, O, HO, WO) output."""
    n, c, h, w = x.shape
    o = weight.shape[0]
    ho, wo = geom.output_size(h, w)
    config = config or forward_config(o)
    out = x.new_empty(n, o, ho, wo)
    weight_by_tap = weight.permute(2, 3, 1, 0).contiguous()
    grid = (triton.cdiv(n * ho * wo, config.block_rows), triton.cdiv(o, config.block_cols))
    _forward_kernel[grid](
        x.contiguous(), weight_by_tap, out, c, h, w, o, ho, wo, n * ho * wo, **_geometry_args(geom),
        BLOCK_M=config.block_rows, BLOCK_O=config.block_cols, ACC=_accumulator(x.dtype),
        num_warps=config.num_warps,
    )  # fmt: skip
    return out


def triton_input_grad(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    geom: AdderGeometry,
    config: TileConfig | None = None,
) -> torch.Tensor:
    """AdderNet eq. 6, summed over every window covering each input pixel: the (N, C, H, W) input gradient."""
    n, c, h, w = x.shape
    o = weight.shape[0]
    ho, wo = grad_out.shape[2:]
    config = config or input_grad_config(c)
    grad_input = torch.empty_like(x)
    weight_by_tap = weight.permute(2, 3, 0, 1).contiguous()
    grid = (triton.cdiv(n * h * w, config.block_rows), triton.cdiv(c, config.block_cols))
    _input_grad_kernel[grid](
        x.contiguous(), weight_by_tap, grad_out.contiguous(), grad_input, c, h, w, o, ho, wo, n * h * w,
        **_geometry_args(geom), BLOCK_P=config.block_rows, BLOCK_C=config.block_cols,
        ACC=_accumulator(x.dtype), num_warps=config.num_warps,
    )  # fmt: skip
    return grad_input


class TritonBackend:
    """:class:`~pkkd_lightning.ops.backends.AdderBackend` running the Triton kernels (``chunk_bytes`` is
    unused: nothing proportional to the patch count is allocated)."""

    def forward(self, x, weight, geom, chunk_bytes):  # noqa: D102 - see AdderBackend
        if not runs_on(x.device.type):
            raise RuntimeError(
                f"backend='triton' needs the triton package and CUDA tensors (or TRITON_INTERPRET=1 to run "
                f"its kernels in the CPU interpreter), got a tensor on {x.device}; use backend='auto'"
            )
        with _on_device_of(x):
            return triton_forward(x, weight, geom)

    def backward(self, grad_out, x, weight, geom, chunk_bytes, need_input_grad, need_weight_grad):  # noqa: D102
        with _on_device_of(x):
            grad_input = triton_input_grad(grad_out, x, weight, geom) if need_input_grad else None
        grad_weight = adder_weight_grad(grad_out, x, weight, geom) if need_weight_grad else None
        return grad_input, grad_weight


def _on_device_of(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it ``x``'s (a tensor on cuda:1 while cuda:0 is current)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def runs_on(device_type: str) -> bool:
    """Whether the kernels can run on tensors of ``device_type``: CUDA, or the CPU under ``TRITON_INTERPRET=1``."""
    if triton is None:
        return False
    if device_type == "cpu":
        return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return device_type == "cuda"
