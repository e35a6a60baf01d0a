"""Reading network weights from Lightning checkpoints and exported files, with errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` a checkpoint on the CPU, turning a missing or unreadable file into a clear error.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable PyTorch checkpoint (truncated, corrupt, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch.load raises pickle, zip and runtime errors for damaged files
        raise ValueError(
            f"checkpoint {path} is corrupt or not a PyTorch checkpoint ({type(err).__name__}: {err})"
        ) from err


def network_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of the network a checkpoint is about.

    * An exported student (``{"state_dict": ..., "arch": ...}`` without Lightning keys) or a bare state dict:
      used as is.
    * A Lightning checkpoint of a :class:`~pkkd_lightning.PKKDModule`: the ``teacher.`` weights if it has a
      teacher, else the ``student.`` weights (a ``cnn``-mode run's CNN is its student).
    """
    state = checkpoint.get("state_dict", checkpoint)
    if "pytorch-lightning_version" not in checkpoint:
        return state
    prefix = "teacher." if any(k.startswith("teacher.") for k in state) else "student."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_network_weights(net: nn.Module, path: str | Path) -> None:
    """Load ``net``'s weights from ``path`` (see :func:`network_state_dict`), strictly."""
    state = network_state_dict(read_checkpoint(path))
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"weights in {path} do not fit {type(net).__name__}: {err}") from None
