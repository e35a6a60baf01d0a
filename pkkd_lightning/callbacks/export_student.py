"""ExportStudent: write the plain student network (no teacher, no training-only transforms) when fitting ends.

The file is self-describing (format 2, :mod:`pkkd_lightning.student_bundle`): besides the weights and what builds the
network it records the class names and the preprocessing of the data, so that
:func:`~pkkd_lightning.student_bundle.load_student_bundle`, ``tools.predict`` and ``tools.export`` need nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch.nn as nn

from pkkd_lightning.atomic_io import atomic_torch_save
from pkkd_lightning.student_bundle import load_student_bundle, student_fields


def export_student(
    pl_module: L.LightningModule,
    path: str | Path,
    data_info: dict[str, Any] | None = None,
    epochs: int | None = None,
) -> Path:
    """Save ``pl_module.student`` with its description (format 2) to ``path``, atomically (a kill during the write
    leaves the previous file).

    Args:
        pl_module: a :class:`~pkkd_lightning.PKKDModule`.
        path: the file to write.
        data_info: the data module's ``export_info()`` (class names, input size, normalisation, resize and crop);
            None records those fields as None.
        epochs: the run's length in epochs, recorded in ``hparams`` (None: unknown).

    Returns:
        ``path``.
    """
    payload = student_fields(pl_module.hparams, pl_module.student, data_info, epochs)
    payload["state_dict"] = pl_module.student_state_dict()
    return atomic_torch_save(payload, path)


def load_exported_student(path: str | Path) -> nn.Module:
    """The student network of an export (format 1 or 2) or of a PKKD Lightning checkpoint, in eval mode.

    See :func:`~pkkd_lightning.student_bundle.load_student_bundle` for the class names and preprocessing too.
    """
    return load_student_bundle(path).model


def _datamodule_export_info(trainer: L.Trainer) -> dict[str, Any] | None:
    """``trainer.datamodule.export_info()``, or None when the trainer has no data module or it lacks the method."""
    export_info = getattr(getattr(trainer, "datamodule", None), "export_info", None)
    return export_info() if callable(export_info) else None


class ExportStudent(L.Callback):
    """At the end of ``fit``, export the student to ``<log dir>/<filename>`` (rank zero only).

    The data module's ``export_info()`` (when it has one) describes the data in the export, and is also stored in
    every checkpoint of the run as ``data_info``, so that a ``.ckpt`` serves wherever a student file does.

    Args:
        filename: file name inside the logger's directory (or ``dirpath`` if given).
        dirpath: directory to write to instead of the logger's.
        use_best: export the weights of the best checkpoint of the run's ``ModelCheckpoint`` instead of the
            final weights, when one exists.
    """

    def __init__(self, filename: str = "student.pt", dirpath: str | None = None, use_best: bool = True) -> None:
        self.filename, self.dirpath, self.use_best = filename, dirpath, use_best

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if (data_info := _datamodule_export_info(trainer)) is not None:
            checkpoint["data_info"] = data_info

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every rank reads the directory first: Trainer.log_dir is a collective (strategy.broadcast), and a
        # collective that only rank zero enters leaves it waiting for the others forever (or until they exit).
        directory = Path(self.dirpath or trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if self.use_best else ""
        if best:
            module = type(pl_module).load_from_checkpoint(best, map_location="cpu", weights_only=False)
        else:
            module = pl_module
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        export_student(module, directory / self.filename, _datamodule_export_info(trainer), epochs)
