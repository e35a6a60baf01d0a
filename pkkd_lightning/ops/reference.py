"""The slow, obviously-correct adder layer: it materialises every patch-filter difference.

This is the algorithm of the public AdderNet reference code (Chen et al., CVPR 2020): unfold the input into
patches, form ``X - F`` for every (patch, filter) pair and reduce it. Memory is O(N * L * C_out * k), so it is
only used to check the fast backends (tests run it in float64) and as the baseline in ``benchmarks/``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pkkd_lightning.ops.geometry import AdderGeometry


def _patch_filter_differences(x: torch.Tensor, weight: torch.Tensor, geom: AdderGeometry) -> torch.Tensor:
    """``X - F`` for every patch and filter: shape (N, C_out, k, L)."""
    cols = F.unfold(x, geom.kernel_size, geom.dilation, geom.padding, geom.stride)  # (N, k, L)
    return cols.unsqueeze(1) - weight.reshape(1, weight.shape[0], -1, 1)


def reference_forward(x: torch.Tensor, weight: torch.Tensor, geom: AdderGeometry) -> torch.Tensor:
    """AdderNet eq. (2): ``Y = -sum_k |X_k - F_k|`` per output position and filter."""
    out = -_patch_filter_differences(x, weight, geom).abs().sum(2)  # (N, C_out, L)
    out_h, out_w = geom.output_size(x.shape[2], x.shape[3])
    return out.reshape(x.shape[0], weight.shape[0], out_h, out_w)


def reference_backward(
    grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, geom: AdderGeometry
) -> tuple[torch.Tensor, torch.Tensor]:
    """AdderNet gradients, eqs. (5) and (6) of Chen et al.

    Weight: the full-precision ``dY/dF = X - F`` (not ``sign(X - F)``).
    Input: ``dY/dX = HardTanh(F - X)``, folded back onto the input.

    Returns:
        ``(grad_input, grad_weight)`` with the shapes of ``x`` and ``weight``.
    """
    diff = _patch_filter_differences(x, weight, geom)  # X - F, (N, C_out, k, L)
    g = grad_out.reshape(grad_out.shape[0], grad_out.shape[1], 1, -1)  # (N, C_out, 1, L)
    grad_weight = (diff * g).sum(dim=(0, 3)).reshape_as(weight)
    grad_cols = (g * (-diff).clamp(-1.0, 1.0)).sum(1)  # (N, k, L)
    grad_input = F.fold(grad_cols, (x.shape[2], x.shape[3]), geom.kernel_size, geom.dilation, geom.padding, geom.stride)
    return grad_input, grad_weight
