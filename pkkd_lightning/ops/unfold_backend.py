"""The portable fast path: unfold + ``torch.cdist(p=1)``, memory-bounded, no compiler needed.

``cdist`` computes the L1 distances without materialising differences. The input gradient has no such
library reduction, so it materialises ``HardTanh(W - R)`` for blocks of patch rows whose size is capped at
``block_bytes``: bounded memory, but not fast. This backend is the fallback when ``torch.compile`` (the fused
backend) is unavailable.
"""

from __future__ import annotations

import torch

#: Cap on the (rows, C_out, k) block the input gradient materialises at once.
DEFAULT_BLOCK_BYTES = 16 * 2**20


class UnfoldKernels:
    """:class:`~pkkd_lightning.ops.rowwise.RowKernels` built from stock PyTorch operations."""

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        self.block_bytes = block_bytes

    def l1_distance(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``D[m, o] = sum_k |R[m, k] - W[o, k]|`` through ``torch.cdist``."""
        return torch.cdist(rows, weight, p=1.0)

    def clipped_input_grad(self, grad: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``dR[m, k] = sum_o G[m, o] * HardTanh(W[o, k] - R[m, k])``, materialised block by block."""
        out = torch.empty_like(rows)
        per_row = weight.numel() * rows.element_size()
        step = max(1, self.block_bytes // per_row)
        for start in range(0, rows.shape[0], step):
            block = rows[start : start + step]
            clipped = (weight.unsqueeze(0) - block.unsqueeze(1)).clamp_(-1.0, 1.0)
            out[start : start + step] = torch.einsum("mo,mok->mk", grad[start : start + step], clipped)
        return out
