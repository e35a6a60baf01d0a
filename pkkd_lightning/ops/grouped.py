"""Grouped and depthwise adder layers, with ``groups`` meaning what it means in ``nn.Conv2d``.

With ``g`` groups the weight is (C_out, C_in / g, kh, kw); output channel ``o`` belongs to group
``o // (C_out / g)`` and its L1 distance (AdderNet eq. 2) runs over that group's ``C_in / g`` input channels
only. Gradients are AdderNet's (eqs. 5-6), per group. Three ways to compute it:

* ``native`` takes groups in its own kernels (:class:`~pkkd_lightning.ops.native_backend.NativeBackend`), with
  channel-vectorised kernels for depthwise layers (one input channel and one filter per group).
* :class:`PerGroupBackend` runs any other backend once per group on channel slices and concatenates outputs and
  gradients, so every backend supports groups without a kernel change. ``reference`` always takes this path.
* :class:`VectorisedGroupsBackend` treats all groups at once in plain torch ops. Depthwise layers (MobileNet,
  EfficientNet) have hundreds of one-channel groups, where a call per group costs more than its arithmetic.

:func:`grouped_backend` picks between them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from pkkd_lightning.ops.backends import AdderBackend, ReferenceBackend
from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.native_backend import NativeBackend
from pkkd_lightning.ops.weight_grad import adder_weight_grad

#: Widest group (input channels per group) that goes through :class:`VectorisedGroupsBackend` when the backend
#: has no grouped kernels of its own: depthwise only. Forward + backward, float32, batch 32, 16x16, 3x3, padding 1,
#: ``native`` for the per-group path, on this 2-core CPU shared with training jobs (best of 9, vectorised /
#: per-group, ms; 1 thread | 2 threads): depthwise 96 channels 77 / 129 | 210 / 639; depthwise 384 channels
#: 322 / 561 | 644 / 5543; depthwise with multiplier 2 (96 -> 192) 212 / 147 | 348 / 764; C_in / g = 2 146 / 49 |
#: 227 / 441; C_in / g = 4 174 / 51 | 812 / 429. The vectorised path makes (C_in / g) * kh * kw rounds of 3-5 passes
#: over an output-sized tensor; each per-group call has a fixed cost, which one-channel groups cannot amortise.
#: (Against ``fused`` per group the crossing is near 4, ``unfold`` 8+.) ``native``'s grouped kernels beat both
#: except for depthwise layers with a channel multiplier (``benchmarks/adder_op.py --grouped``).
VECTORISE_MAX_GROUP_CHANNELS = 1


class PerGroupBackend:
    """Any :class:`~pkkd_lightning.ops.backends.AdderBackend`, called once per group on channel slices."""

    def __init__(self, backend: AdderBackend, groups: int) -> None:
        self.backend, self.groups = backend, groups

    def forward(self, x, weight, geom, chunk_bytes):  # noqa: D102 - see AdderBackend
        pairs = zip(x.tensor_split(self.groups, 1), weight.tensor_split(self.groups, 0))
        return torch.cat([self.backend.forward(xs.contiguous(), ws, geom, chunk_bytes) for xs, ws in pairs], 1)

    def backward(self, grad_out, x, weight, geom, chunk_bytes, need_input_grad, need_weight_grad):  # noqa: D102
        slices = zip(
            grad_out.tensor_split(self.groups, 1), x.tensor_split(self.groups, 1), weight.tensor_split(self.groups, 0)
        )
        grads = [
            self.backend.backward(
                gs.contiguous(), xs.contiguous(), ws, geom, chunk_bytes, need_input_grad, need_weight_grad
            )
            for gs, xs, ws in slices
        ]
        grad_input = torch.cat([gi for gi, _ in grads], 1) if need_input_grad else None
        grad_weight = torch.cat([gw for _, gw in grads], 0) if need_weight_grad else None
        return grad_input, grad_weight


class VectorisedGroupsBackend:
    """All groups at once, one kernel tap at a time, in plain torch operations.

    With ``X_t`` (N, g, 1, H_out, W_out) the padded input seen through tap ``t`` = (channel within the group,
    kernel row, kernel column) -- a strided view, nothing is unfolded -- and ``W_t`` (g, C_out / g, 1, 1) that
    tap of every filter:

    * forward (AdderNet eq. 2): ``Y[n, g, o] = -sum_t |X_t[n, g] - W_t[g, o]|``;
    * input gradient (eq. 6): ``dX_t[n, g] += sum_o G[n, g, o] * HardTanh(W_t[g, o] - X_t[n, g])``;
    * weight gradient (eq. 5): ``dW[g, o, t] = sum_{n,i,j} G[n, g, o] * (X_t[n, g] - W_t[g, o])``.

    Every temporary has the size of the output, so ``chunk_bytes`` is unused (as for ``native``).
    """

    def __init__(self, groups: int) -> None:
        self.groups = groups

    def _padded(self, x: torch.Tensor, geom: AdderGeometry) -> torch.Tensor:
        """The zero-padded input as (N, g, C_in / g, H + 2 ph, W + 2 pw)."""
        (ph, pw), (n, c, h, w) = geom.padding, x.shape
        return F.pad(x, (pw, pw, ph, ph)).view(n, self.groups, c // self.groups, h + 2 * ph, w + 2 * pw)

    def _taps(self, weight: torch.Tensor, geom: AdderGeometry, out_h: int, out_w: int) -> Iterator[tuple]:
        """Per tap: where ``X_t`` (N, g, 1, H_out, W_out) is in :meth:`_padded`, and ``W_t`` (g, C_out / g, 1, 1)."""
        filters = weight.reshape(self.groups, -1, *weight.shape[1:])
        (sh, sw), (dh, dw) = geom.stride, geom.dilation
        for c, i, j in itertools.product(*map(range, weight.shape[1:])):
            rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)
            yield (slice(None), slice(None), slice(c, c + 1), rows, cols), filters[:, :, c, i, j, None, None]

    def forward(self, x, weight, geom, chunk_bytes):  # noqa: D102 - see AdderBackend
        out_h, out_w = geom.output_size(x.shape[2], x.shape[3])
        padded = self._padded(x, geom)
        out = x.new_zeros(x.shape[0], self.groups, weight.shape[0] // self.groups, out_h, out_w)
        for index, w_t in self._taps(weight, geom, out_h, out_w):
            out.sub_((padded[index] - w_t).abs_())
        return out.view(x.shape[0], weight.shape[0], out_h, out_w)

    def backward(self, grad_out, x, weight, geom, chunk_bytes, need_input_grad, need_weight_grad):  # noqa: D102
        grad_input = grad_weight = None
        if need_input_grad:
            (ph, pw), (out_h, out_w) = geom.padding, grad_out.shape[2:]
            padded = self._padded(x, geom)
            grad = grad_out.view(x.shape[0], self.groups, -1, out_h, out_w)
            grad_padded = torch.zeros_like(padded)
            for index, w_t in self._taps(weight, geom, out_h, out_w):
                clipped = (w_t - padded[index]).clamp_(-1.0, 1.0).mul_(grad)  # (N, g, C_out / g, H_out, W_out)
                # a sum over a size-1 dimension would cost a full copy: depthwise layers skip it
                grad_padded[index] += clipped if clipped.shape[2] == 1 else clipped.sum(2, keepdim=True)
            grad_padded = grad_padded.view(x.shape[0], x.shape[1], *padded.shape[3:])
            grad_input = grad_padded[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]]
        if need_weight_grad:
            grad_weight = adder_weight_grad(grad_out, x, weight, geom, self.groups)
        return grad_input, grad_weight


def grouped_backend(backend: AdderBackend, groups: int, group_channels: int, group_filters: int) -> AdderBackend:
    """The way ``backend`` runs a layer with ``groups`` groups of ``group_channels`` input channels and
    ``group_filters`` filters each.

    ``groups == 1`` is ``backend`` itself; ``native`` runs every group in its own kernels except one-channel groups
    with several filters (a depthwise channel multiplier); ``reference`` and wide groups go group by group
    (:class:`PerGroupBackend`); narrow groups (depthwise) go through :class:`VectorisedGroupsBackend`.
    """
    if groups == 1:
        return backend
    if isinstance(backend, NativeBackend) and (group_channels > 1 or group_filters == 1):
        return NativeBackend(groups)
    if isinstance(backend, ReferenceBackend) or group_channels > VECTORISE_MAX_GROUP_CHANNELS:
        return PerGroupBackend(backend, groups)
    return VectorisedGroupsBackend(groups)
