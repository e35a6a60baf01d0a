"""Memory-bounded driver shared by the fast adder backends.

A backend supplies two reductions over patch rows ``R`` (M, k) and filters ``W`` (C_out, k):

* ``l1_distance(R, W)[m, o] = sum_k |R[m, k] - W[o, k]|`` (the forward, AdderNet eq. 2, up to sign);
* ``clipped_input_grad(G, R, W)[m, k] = sum_o G[m, o] * HardTanh(W[o, k] - R[m, k])`` (AdderNet eq. 6).

The weight gradient needs no such kernel: see :mod:`pkkd_lightning.ops.weight_grad`.

The driver walks the batch in chunks of whole images so that the unfolded patch rows of one chunk never exceed
``chunk_bytes``; patch rows are recomputed in the backward pass instead of being saved. Peak extra memory is
therefore bounded by a few chunks, independent of the batch size, and the chunking never changes the result.
"""

from __future__ import annotations

from typing import Protocol

import torch

from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.weight_grad import adder_weight_grad

#: Lower bound of the automatic chunk budget: chunks smaller than this stop paying for their overhead.
MIN_CHUNK_BYTES = 4 * 2**20


class RowKernels(Protocol):
    """The two L1-style reductions a fast backend provides (see the module docstring)."""

    def l1_distance(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor: ...

    def clipped_input_grad(self, grad: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor: ...


def images_per_chunk(x: torch.Tensor, weight: torch.Tensor, geom: AdderGeometry, chunk_bytes: int | None) -> int:
    """How many images of ``x`` go into one chunk so that their patch rows fit ``chunk_bytes``.

    ``None`` picks the budget automatically: the size of ``x`` itself (at least ``MIN_CHUNK_BYTES``), so the
    unfolded rows never cost more than one extra copy of the input, which is what keeps the layer's peak
    memory close to a convolution's.
    """
    if chunk_bytes is None:
        chunk_bytes = max(x.numel() * x.element_size(), MIN_CHUNK_BYTES)
    out_h, out_w = geom.output_size(x.shape[2], x.shape[3])
    bytes_per_image = out_h * out_w * weight[0].numel() * x.element_size()
    return max(1, min(x.shape[0], chunk_bytes // max(bytes_per_image, 1)))


def rowwise_forward(
    kernels: RowKernels, x: torch.Tensor, weight: torch.Tensor, geom: AdderGeometry, chunk_bytes: int | None
) -> torch.Tensor:
    """``Y = -||X - F||_1`` for every patch and filter, chunk by chunk."""
    batch, _, height, width = x.shape
    out_h, out_w = geom.output_size(height, width)
    out = x.new_empty(batch, weight.shape[0], out_h, out_w)
    w2d = weight.reshape(weight.shape[0], -1)
    step = images_per_chunk(x, weight, geom, chunk_bytes)
    for start in range(0, batch, step):
        part = x[start : start + step]
        rows = geom.unfold_rows(part)
        dist = kernels.l1_distance(rows, w2d)
        out[start : start + step] = geom.rows_to_output(dist, part.shape[0], height, width).neg()
    return out


def rowwise_backward(
    kernels: RowKernels,
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    geom: AdderGeometry,
    chunk_bytes: int | None,
    need_input_grad: bool = True,
    need_weight_grad: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """AdderNet gradients: eq. 6 chunk by chunk through ``kernels``, eq. 5 through :func:`adder_weight_grad`."""
    batch, _, height, width = x.shape
    grad_input = grad_weight = None
    if need_input_grad:
        w2d = weight.reshape(weight.shape[0], -1)
        grad_input = torch.empty_like(x)
        step = images_per_chunk(x, weight, geom, chunk_bytes)
        for start in range(0, batch, step):
            part = x[start : start + step]
            rows = geom.unfold_rows(part)
            g_rows = geom.output_to_rows(grad_out[start : start + step])
            grad_rows = kernels.clipped_input_grad(g_rows, rows, w2d)
            grad_input[start : start + step] = geom.fold_rows(grad_rows, part.shape[0], height, width)
    if need_weight_grad:
        grad_weight = adder_weight_grad(grad_out, x, weight, geom)
    return grad_input, grad_weight
