"""PreemptionCheckpoint: on SIGTERM (a preempted or cancelled job), save a checkpoint that ``fit`` can resume."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import OnExceptionCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class PreemptionCheckpoint(OnExceptionCheckpoint):
    """Write ``<dirpath>/<filename>.ckpt`` when the run stops on SIGTERM.

    Lightning turns SIGTERM into a ``SIGTERMException`` at the next batch boundary (on every rank under DDP);
    this callback saves the full training state at that point and says where (the CLI then exits with code 143).
    Other failures, such as a non-finite loss, save nothing, so the last good checkpoint is never shadowed by a
    state taken mid-failure.

    Args:
        dirpath: where to write; ``None`` uses ``<default_root_dir>/checkpoints``.
        filename: file name without extension.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "preempted") -> None:
        super().__init__(dirpath or ".", filename)
        self._dirpath_given = dirpath is not None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self._dirpath_given:
            checkpoint = trainer.checkpoint_callback
            self.dirpath = getattr(checkpoint, "dirpath", None) or f"{trainer.default_root_dir}/checkpoints"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            super().on_exception(trainer, pl_module, exception)
            rank_zero_info(
                f"SIGTERM: saved the training state at global step {trainer.global_step} to {self.ckpt_path}; "
                f"resume with --ckpt_path {self.ckpt_path}"
            )
