"""The fast CPU/GPU path: the two L1 reductions compiled into fused kernels by ``torch.compile``.

Written as broadcast-subtract-abs-sum, the reductions would materialise an (M, C_out, k) tensor in eager
mode; TorchInductor fuses the broadcast into the reduction loop instead (a C++/OpenMP vectorised kernel on the
CPU, a Triton kernel on CUDA), so nothing larger than the output is allocated and the arithmetic is the same
subtract/abs/add count that a convolution spends on multiply/add. Shapes are compiled dynamically, so one
compilation serves every layer; Inductor's on-disk cache makes later processes start fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


def _l1_distance(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (rows.unsqueeze(1) - weight.unsqueeze(0)).abs().sum(-1)


def _clipped_input_grad(grad: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (grad.unsqueeze(2) * (weight.unsqueeze(0) - rows.unsqueeze(1)).clamp(-1.0, 1.0)).sum(1)


@functools.cache
def _compiled(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    return torch.compile(fn, dynamic=True, fullgraph=True)


class FusedKernels:
    """:class:`~pkkd_lightning.ops.rowwise.RowKernels` compiled by TorchInductor."""

    def l1_distance(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``D[m, o] = sum_k |R[m, k] - W[o, k]|`` as one fused reduction."""
        return _compiled(_l1_distance)(rows, weight)

    def clipped_input_grad(self, grad: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``dR[m, k] = sum_o G[m, o] * HardTanh(W[o, k] - R[m, k])`` as one fused reduction."""
        return _compiled(_clipped_input_grad)(grad, rows, weight)
