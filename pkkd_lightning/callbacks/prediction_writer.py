"""PredictionWriter: ``cli.py predict`` writes its predictions to a CSV file."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from pkkd_lightning.atomic_io import atomic_open


class PredictionWriter(BasePredictionWriter):
    """Write one CSV row per sample: ``index, prediction, confidence[, target]``.

    Args:
        output_path: the CSV file; ``None`` writes ``predictions.csv`` (``predictions_rank<r>.csv`` under DDP)
            into the trainer's log directory.
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_path = output_path
        self.written: Path | None = None

    def _path(self, trainer: L.Trainer) -> Path:
        if self.output_path is not None:
            path = Path(self.output_path)
        else:
            name = "predictions.csv" if trainer.world_size == 1 else f"predictions_rank{trainer.global_rank}.csv"
            path = Path(trainer.log_dir or trainer.default_root_dir) / name
        return path

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        columns = {key: torch.cat([batch[key] for batch in batches]).tolist() for key in batches[0]}
        self.written = self._path(trainer)
        with atomic_open(self.written, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", *columns])
            for index, row in enumerate(zip(*columns.values())):
                writer.writerow([index, *row])
