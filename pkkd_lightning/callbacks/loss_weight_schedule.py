"""LossWeightSchedule: ramps one of the student's loss weights (beta, lambda, tau) over the epochs of a run.

PKKD blends the ground truth and the jointly trained teacher "progressively"; how ``beta`` (soft logits) and
``lambda`` (features) move over training is a schedule **[ours]** (``docs/method.md``). The value is a pure
function of the epoch (:func:`schedule_value`); the callback sets it on the module through
``PKKDModule.set_loss_weight`` at the start of every epoch, keeps it in its ``state_dict`` and puts it back on the
module when a run resumes, also mid-epoch (where Lightning skips ``on_train_epoch_start``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from pkkd_lightning.distill import LossWeightName, LossWeights
from pkkd_lightning.validation import check_choice, check_int

Shape = Literal["constant", "linear", "cosine"]


def schedule_value(shape: Shape, start: float, end: float, epoch: int, start_epoch: int, end_epoch: int) -> float:
    """Value of a schedule at ``epoch``: ``start`` until ``start_epoch``, ``end`` from ``end_epoch`` on.

    In between, ``linear`` interpolates ``start + (end - start) * p`` and ``cosine`` uses
    ``start + (end - start) * (1 - cos(pi p)) / 2``, with ``p = (epoch - start_epoch) / (end_epoch - start_epoch)``.
    ``constant`` is ``start`` throughout.
    """
    check_choice("shape", shape, Shape)
    if shape == "constant":
        return start
    if end_epoch <= start_epoch:
        return start if epoch < start_epoch else end
    p = min(max((epoch - start_epoch) / (end_epoch - start_epoch), 0.0), 1.0)
    weight = p if shape == "linear" else (1 - math.cos(math.pi * p)) / 2
    return start + (end - start) * weight


class LossWeightSchedule(L.Callback):
    """Sets ``name`` on the module to :func:`schedule_value` at the start of every training epoch.

    Args:
        name: the scheduled weight: ``beta``, ``feature_weight`` (lambda) or ``tau``.
        shape: ``constant``, ``linear`` or ``cosine``.
        start, end: values at ``start_epoch`` and from ``end_epoch`` on (each checked against the weight's range).
        start_epoch, end_epoch: where the ramp begins and ends (``end_epoch=None``: the last epoch of the run).

    While the schedule runs, the module's own value of ``name`` (``model.beta`` etc.) is not used; the run's log
    says so at the start of ``fit``, and the value in effect is logged every step (``train/<name>``).
    """

    def __init__(
        self,
        name: LossWeightName = "beta",
        shape: Shape = "linear",
        start: float = 0.0,
        end: float = 0.5,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        check_choice("name", name, LossWeightName)
        check_choice("shape", shape, Shape)
        check_int("start_epoch", start_epoch, 0)
        check_int("end_epoch", end_epoch, start_epoch, optional=True)
        for value in (start, end):
            LossWeights(**{name: value})  # raises naming model.<name> and its range
        self.name, self.shape, self.start, self.end = name, shape, start, end
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.current: float | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    def describe(self) -> str:
        """``beta: linear 0.0 -> 0.5, epochs 0..last``."""
        end_epoch = "last" if self.end_epoch is None else self.end_epoch
        if self.shape == "constant":
            return f"{self.name}: constant {self.start}"
        return f"{self.name}: {self.shape} {self.start} -> {self.end}, epochs {self.start_epoch}..{end_epoch}"

    def value_at(self, epoch: int, max_epochs: int) -> float:
        """The schedule's value at ``epoch`` of a run of ``max_epochs``."""
        end_epoch = self.end_epoch if self.end_epoch is not None else max(max_epochs - 1, 0)
        return schedule_value(self.shape, self.start, self.end, epoch, self.start_epoch, end_epoch)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        constructed = getattr(pl_module.hparams, self.name, None)
        rank_zero_info(f"LossWeightSchedule {self.describe()} (model.{self.name}={constructed} is not used)")
        for logger in trainer.loggers:
            logger.log_hyperparams({f"schedule/{self.name}": self.describe()})

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run: the value saved with the checkpoint, also when it resumes mid-epoch.
        if self.current is not None:
            pl_module.set_loss_weight(self.name, self.current)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.current = self.value_at(trainer.current_epoch, trainer.max_epochs or 1)
        pl_module.set_loss_weight(self.name, self.current)

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.current = state_dict.get("current")
