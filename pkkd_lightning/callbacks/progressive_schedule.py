"""ProgressiveSchedule: moves PKKD's beta, lambda and tau over training (PKKD's "progressive" blending)."""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L

Shape = Literal["constant", "linear", "cosine"]
SCHEDULED = ("beta", "feature_weight", "tau")


def schedule_value(shape: Shape, start: float, end: float, epoch: int, start_epoch: int, end_epoch: int) -> float:
    """Value of a schedule at ``epoch``: ``start`` until ``start_epoch``, ``end`` from ``end_epoch`` on.

    In between, ``linear`` interpolates ``start + (end - start) * p`` and ``cosine`` uses
    ``start + (end - start) * (1 - cos(pi p)) / 2``, with ``p = (epoch - start_epoch) / (end_epoch - start_epoch)``.
    ``constant`` is ``start`` throughout.
    """
    if shape not in ("constant", "linear", "cosine"):
        raise ValueError(f"shape must be 'constant', 'linear' or 'cosine', got {shape!r}")
    if shape == "constant":
        return start
    if end_epoch <= start_epoch:
        return start if epoch < start_epoch else end
    p = min(max((epoch - start_epoch) / (end_epoch - start_epoch), 0.0), 1.0)
    weight = p if shape == "linear" else (1 - math.cos(math.pi * p)) / 2
    return start + (end - start) * weight


class ProgressiveSchedule(L.Callback):
    """Sets ``pl_module.<name>`` from :func:`schedule_value` at the start of every training epoch.

    Args:
        name: the scheduled attribute: ``beta``, ``feature_weight`` (lambda) or ``tau``.
        shape: ``constant``, ``linear`` or ``cosine``.
        start, end: values at ``start_epoch`` and from ``end_epoch`` on.
        start_epoch, end_epoch: where the ramp begins and ends (``end_epoch=None``: the last epoch).

    The value is a pure function of the epoch, so a resumed run continues the schedule exactly; the state dict
    keeps the last value set, which is restored onto the module when a checkpoint is loaded.
    """

    def __init__(
        self,
        name: str = "beta",
        shape: Shape = "linear",
        start: float = 0.0,
        end: float = 0.5,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        if name not in SCHEDULED:
            raise ValueError(f"name must be one of {SCHEDULED}, got {name!r}")
        schedule_value(shape, start, end, 0, 0, 1)  # validates shape
        self.name, self.shape, self.start, self.end = name, shape, start, end
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.current: float | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    def value_at(self, epoch: int, max_epochs: int) -> float:
        """The schedule's value at ``epoch`` of a run of ``max_epochs``."""
        end_epoch = self.end_epoch if self.end_epoch is not None else max(max_epochs - 1, 0)
        return schedule_value(self.shape, self.start, self.end, epoch, self.start_epoch, end_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.current = self.value_at(trainer.current_epoch, trainer.max_epochs or 1)
        setattr(pl_module, self.name, self.current)

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.current = state_dict.get("current")
