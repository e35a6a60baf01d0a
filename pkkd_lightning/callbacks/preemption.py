"""PreemptionCheckpoint: on SIGTERM (a preempted or cancelled job), save a checkpoint that ``fit`` can resume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class PreemptionCheckpoint(Checkpoint):
    """Write ``<dirpath>/<filename>.ckpt`` when the run stops on SIGTERM.

    Lightning turns SIGTERM into a ``SIGTERMException`` at the next batch boundary (on every rank under DDP);
    this callback saves the full training state at that point and says where (the CLI then exits with code 143).
    Other failures, such as a non-finite loss, save nothing, so the last good checkpoint is never shadowed by a
    state taken mid-failure. A fit that ends normally removes the file: its ``last.ckpt`` is newer.

    It is deliberately not Lightning's ``OnExceptionCheckpoint``: the Trainer treats the presence of one as "resume
    the newest checkpoint" for every ``fit`` without ``ckpt_path``, which made fresh fits in a fixed checkpoint
    folder continue another run. Resuming is asked for explicitly (``--ckpt_path``, or ``last`` in ``cli.py``).
    As a ``Checkpoint`` it runs after the other callbacks, so the run's ``ModelCheckpoint`` folder is known in
    ``setup``.

    Args:
        dirpath: where to write; ``None`` uses the run's checkpoint folder (``<log dir>/checkpoints``).
        filename: file name without extension.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "preempted") -> None:
        if not filename:
            raise ValueError("preemption.filename must not be empty")
        self.dirpath, self.filename = dirpath, filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath or ".", f"{self.filename}.ckpt")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            checkpoint = trainer.checkpoint_callback
            self.dirpath = getattr(checkpoint, "dirpath", None) or f"{trainer.default_root_dir}/checkpoints"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.ckpt_path)  # every rank takes part; rank zero writes
            rank_zero_info(
                f"SIGTERM: saved the training state at global step {trainer.global_step} to {self.ckpt_path}; "
                f"resume with --ckpt_path {self.ckpt_path} (or --ckpt_path last)"
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero and not trainer.interrupted:
            Path(self.ckpt_path).unlink(missing_ok=True)

    def state_dict(self) -> dict[str, Any]:
        return {}
