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


def predicted_files(datamodule: Any) -> list[str] | None:
    """The file of every item of the data module's prediction split (its test split, in order), where the data
    reads files (an ImageFolder underneath, as CIFAR's and ImageNet's JPEG trees, or an image-folder data set)."""
    dataset = getattr(datamodule, "test_set", None)
    samples = getattr(getattr(dataset, "base", None), "samples", None)
    indices = getattr(dataset, "indices", None)
    if samples is None or indices is None:
        return None
    return [samples[index][0] for index in indices]


class PredictionWriter(BasePredictionWriter):
    """Write one CSV row per sample: ``index[, path], prediction[, class], confidence[, target]``.

    ``index`` is the item's position in the prediction split; ``path`` its file and ``class`` the predicted class's
    name, where the data module knows them (``predicted_files``, its ``classes``).

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
        indices = self._item_indices(batch_indices, len(columns["prediction"]))
        datamodule = getattr(trainer, "datamodule", None)
        files = predicted_files(datamodule)
        if files is not None:
            columns = {"path": [files[i] for i in indices], **columns}
        if classes := list(getattr(datamodule, "classes", None) or []):
            columns = {**columns, "class": [classes[label] for label in columns["prediction"]]}
        self.written = self._path(trainer)
        with atomic_open(self.written, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", *columns])
            for index, row in zip(indices, zip(*columns.values())):
                writer.writerow([index, *row])

    @staticmethod
    def _item_indices(batch_indices: Sequence[Any], count: int) -> list[int]:
        """The prediction split's item index of every row: the sampler's (under DDP each process predicts a
        subset) when Lightning recorded it, else the rows' order."""
        per_batch = batch_indices[0] if batch_indices and isinstance(batch_indices[0], list) else batch_indices
        flat = [int(i) for batch in per_batch or [] for i in batch]
        return flat if len(flat) == count else list(range(count))
