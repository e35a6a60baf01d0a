"""BestCheckpoint: a ``ModelCheckpoint`` whose best model survives a resume into a new log folder.

A resumed CLI run logs into a new ``version_<n>`` folder, so its checkpoint directory differs from the one in the
checkpoint it resumes from. Lightning's ``ModelCheckpoint`` then forgets the best score (it keeps only the path),
and the first epoch after the resume becomes "best" even when an earlier epoch was better; ``test_after_fit`` and
the exported student would use it. This subclass carries the whole best-model state over: it copies the best
checkpoint file into the new directory (rank zero; the others only record the path) and restores its score, so
the run's best is the best over all its parts, and the new folder holds it. The copy is atomic
(:mod:`pkkd_lightning.atomic_io`). Only a resumed ``fit`` carries it over: ``test``/``predict`` from a checkpoint
copy nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from pkkd_lightning.atomic_io import atomic_copy


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) that keeps the best model and its score across a resume."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._stage = stage  # setup runs before the checkpoint's callback states are restored

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if getattr(self, "_stage", "fit") != "fit":
            return  # test/validate/predict from a checkpoint: nothing to carry over, no copy of the best
        old_dir = state_dict.get("dirpath", self.dirpath)
        old_best = state_dict.get("best_model_path") or ""
        if old_dir == self.dirpath or self.dirpath is None or not Path(old_best).is_file():
            super().load_state_dict(state_dict)
            return
        new_best = str(Path(self.dirpath) / Path(old_best).name)
        if rank_zero_only.rank == 0:
            atomic_copy(old_best, new_best)
            rank_zero_info(f"resumed the best checkpoint so far ({old_best}) as {new_best}")
        score = state_dict["best_model_score"]
        self.best_model_path = self.kth_best_model_path = new_best
        self.best_model_score = self.kth_value = score
        self.best_k_models = {new_best: score} if score is not None else {}
