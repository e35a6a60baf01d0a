"""Callbacks the resume tests add to a real ``python cli.py fit`` run (``--trainer.callbacks+=...``)."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L


class SigtermAtStep(L.Callback):
    """Sends SIGTERM to its own process once the optimisation step ``step`` is done, as a job scheduler would.

    Lightning's handler notes the signal, and the fit stops at the next batch boundary with a
    ``SIGTERMException``, where ``PreemptionCheckpoint`` writes ``checkpoints/preempted.ckpt``.

    Args:
        step: Global step after which the signal is sent.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
