"""ExportStudent: write the plain student network (no teacher, no training-only transforms) when fitting ends."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn as nn

from pkkd_lightning.models import build_model
from pkkd_lightning.modes import student_layer_type
from pkkd_lightning.network_io import read_checkpoint


def export_student(pl_module: L.LightningModule, path: str | Path) -> Path:
    """Save ``{"arch", "layer_type", "num_classes", "state_dict"}`` of ``pl_module.student`` to ``path``."""
    hp = pl_module.hparams
    payload = {
        "arch": hp.arch,
        "layer_type": student_layer_type(hp.mode),
        "num_classes": hp.num_classes,
        "state_dict": pl_module.student_state_dict(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def load_exported_student(path: str | Path) -> nn.Module:
    """Rebuild an exported student with :func:`~pkkd_lightning.models.build_model` and load its weights."""
    payload = read_checkpoint(path)
    missing = {"arch", "layer_type", "num_classes", "state_dict"} - set(payload)
    if missing:
        raise ValueError(f"{path} is not an exported student (missing {sorted(missing)})")
    model = build_model(payload["arch"], payload["layer_type"], payload["num_classes"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


class ExportStudent(L.Callback):
    """At the end of ``fit``, export the student to ``<log dir>/<filename>`` (rank zero only).

    Args:
        filename: file name inside the logger's directory (or ``dirpath`` if given).
        dirpath: directory to write to instead of the logger's.
        use_best: export the weights of the best checkpoint of the run's ``ModelCheckpoint`` instead of the
            final weights, when one exists.
    """

    def __init__(self, filename: str = "student.pt", dirpath: str | None = None, use_best: bool = True) -> None:
        self.filename, self.dirpath, self.use_best = filename, dirpath, use_best

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
        export_student(module, directory / self.filename)
