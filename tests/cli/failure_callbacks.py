"""Callbacks that break a run on purpose, appended from the command line (``--trainer.callbacks+=...``)."""

from __future__ import annotations

import lightning as L
import torch


class ScaleWeightsAtStep(L.Callback):
    """Before training step ``step``, multiply the parameters under ``prefix`` by ``factor`` (a diverged update).

    Args:
        step: global step at which to strike.
        factor: the multiplier (1e15 gives huge but finite losses; 1e30 overflows BatchNorm to inf).
        prefix: parameter names to scale (``student.`` by default).
    """

    def __init__(self, step: int = 0, factor: float = 1e15, prefix: str = "student.") -> None:
        self.step, self.factor, self.prefix = step, factor, prefix

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for name, param in pl_module.named_parameters():
                    if name.startswith(self.prefix):
                        param.mul_(self.factor)
