"""Per-group sums of a tensor over every sliding window: the patch sums that distance identities need.

Both AdderNet's min identity (``sum |x - f| = Sx + Sf - 2 sum min(x, f)``, the native forward) and PKKD's Gaussian
kernel (``||x - f||^2 = ||x||^2 + ||f||^2 - 2 x.f``, the conv taps) need, for every output position, the sum of a
patch's values (or squared values) over a group's input channels. Summing the channels first and then each window
with a one-channel box filter per group is the same sum at a fraction of a full convolution's cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grouped_window_sums(
    x: torch.Tensor,
    groups: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """``S[n, g, p] = sum_{c in group g, (i, j)} x[n, c, p + (i, j)]`` with a convolution's window geometry
    (zero padding), as (N, groups, H_out, W_out).

    Args:
        x: (N, C, H, W), ``C`` divisible by ``groups``.
        groups: the number of channel groups summed separately.
        kernel_size, stride, padding, dilation: the window geometry, as ``conv2d`` takes it.
    """
    n, c, h, w = x.shape
    per_group = x.reshape(n, groups, c // groups, h, w).sum(2)
    ones = x.new_ones(groups, 1, *kernel_size)
    return F.conv2d(per_group, ones, None, stride, padding, dilation, groups)
