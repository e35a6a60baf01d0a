"""The optimiser of a run: SGD over named parameter groups, with a cosine or constant learning rate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

LrSchedule = Literal["cosine", "constant"]


def sgd_with_schedule(
    groups: Sequence[dict[str, Any]],
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    schedule: LrSchedule,
    total_steps: int,
) -> dict[str, Any]:
    """Lightning's optimiser configuration: SGD, and for ``cosine`` a per-step cosine decay from ``lr`` to 0 over
    ``total_steps`` (``lr_t = lr (1 + cos(pi t / T)) / 2``, PAPER recipe; see docs/method.md section 4)."""
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if schedule == "constant":
        return {"optimizer": optimizer}
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
