"""Shapes and patch extraction shared by every adder backend.

An adder layer slides a ``d x d`` window over the input exactly as a convolution does; this module holds the
sliding-window bookkeeping (output size, unfold into patch rows, fold of patch-row gradients) so that each
backend only implements its reduction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AdderGeometry:
    """Sliding-window parameters of one adder call (the same meaning as in ``nn.Conv2d``)."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output height and width, ``floor((H + 2p - dil*(d-1) - 1) / s) + 1`` per axis."""
        sizes = []
        for size, k, s, p, dil in zip((height, width), self.kernel_size, self.stride, self.padding, self.dilation):
            sizes.append((size + 2 * p - dil * (k - 1) - 1) // s + 1)
        return sizes[0], sizes[1]

    def unfold_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Patches of ``x`` (N, C, H, W) as rows: (N * L, C * kh * kw), L = output positions per image.

        The row order is (image, output row, output column), the column order is (channel, kernel row,
        kernel column), which is the flattening order of a conv weight ``(C_out, C_in, kh, kw)``.
        """
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])

    def fold_rows(self, rows: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        """Adjoint of :meth:`unfold_rows`: sum patch-row gradients back onto an (N, C, H, W) input."""
        positions = rows.shape[0] // batch
        cols = rows.reshape(batch, positions, -1).transpose(1, 2)
        return F.fold(cols, (height, width), self.kernel_size, self.dilation, self.padding, self.stride)

    def rows_to_output(self, rows: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        """(N * L, C_out) rows to the (N, C_out, H_out, W_out) layout of a conv output."""
        out_h, out_w = self.output_size(height, width)
        return rows.reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2)

    def output_to_rows(self, grad: torch.Tensor) -> torch.Tensor:
        """(N, C_out, H_out, W_out) to (N * L, C_out) rows, the inverse of :meth:`rows_to_output`."""
        return grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])
