"""Per-group window sums against explicit loops."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from pkkd_lightning.ops.window_sums import grouped_window_sums


@pytest.mark.parametrize(
    "groups,stride,padding,dilation", [(1, 1, 1, 1), (3, 2, 1, 1), (2, 1, 0, 2), (6, (2, 1), (0, 1), 1)]
)
def test_window_sums_are_the_sums_over_each_groups_patch(groups, stride, padding, dilation):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 7, 6, generator=gen, dtype=torch.float64)
    kernel = (3, 2)
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    got = grouped_window_sums(x, groups, kernel, (sh, sw), (ph, pw), (dh, dw))
    xp = F.pad(x, (pw, pw, ph, ph))
    per = x.shape[1] // groups
    assert got.shape[:2] == (2, groups)
    for n, g, i, j in itertools.product(range(2), range(groups), range(got.shape[2]), range(got.shape[3])):
        patch = xp[n, g * per : (g + 1) * per, i * sh : i * sh + dh * (kernel[0] - 1) + 1 : dh,
                   j * sw : j * sw + dw * (kernel[1] - 1) + 1 : dw]  # fmt: skip
        assert got[n, g, i, j].item() == pytest.approx(patch.sum().item(), abs=1e-12)
