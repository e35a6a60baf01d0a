"""AtomicCheckpointIO: Lightning's checkpoint writer, made atomic on local filesystems.

Lightning's own writer (``TorchCheckpointIO`` through fsspec) stages a checkpoint in the system's temporary folder
and moves it into place; when that folder is on another filesystem than the run folder (``/tmp`` in memory, runs on
a network share: the usual cluster layout) the move is a copy, and a job killed during it leaves a truncated
``last.ckpt`` where the good one was. This writer stages beside the target instead (:mod:`pkkd_lightning.atomic_io`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pkkd_lightning.atomic_io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic (remote URLs are written as Lightning does)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)
