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


def read_lightning_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """:func:`read_checkpoint`, refusing a file that is not a Lightning checkpoint (``key`` names the option)."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "pytorch-lightning_version" not in checkpoint:
        raise ValueError(
            f"{key} {path} is not a Lightning checkpoint (for example <run>/checkpoints/last.ckpt); an exported "
            "student is loaded with pkkd_lightning.callbacks.load_exported_student instead"
        )
    return checkpoint


def load_module_weights(module: nn.Module, path: str | Path) -> None:
    """Load every weight of a LightningModule (networks, feature heads, buffers) from a Lightning checkpoint, and
    nothing else (no optimiser state, schedule or step): a warm start.

    Raises:
        ValueError: the checkpoint's weights do not fit ``module``, naming the first differing keys.
    """
    checkpoint = read_lightning_checkpoint(path, "warm_start")
    _check_fits(module, checkpoint["state_dict"], path, describe_checkpoint(checkpoint), type(module).__name__)
    module.load_state_dict(checkpoint["state_dict"])


def _check_fits(net: nn.Module, state: dict[str, torch.Tensor], path: str | Path, saved: str, expected: str) -> None:
    """Raise ``ValueError`` naming both sides and the first missing, unexpected or mis-shaped keys, if any."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mis_shaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mis_shaped:

        def first(keys: list[str]) -> str:
            shown = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" if k in mis_shaped else k for k in keys]
            return f"{len(keys)} ({', '.join(shown[:3])}{', ...' if len(keys) > 3 else ''})"

        raise ValueError(
            f"the weights in {path} ({saved}) do not fit the network being built ({expected}): missing keys "
            f"{first(missing)}, unexpected keys {first(unexpected)}, different shapes {first(mis_shaped)}"
        )


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


def describe_checkpoint(checkpoint: dict[str, Any]) -> str:
    """``arch=resnet32, mode=cnn`` as far as the file records it (exported students and Lightning checkpoints)."""
    record = checkpoint.get("hyper_parameters", checkpoint)
    known = [f"{key}={record[key]}" for key in ("arch", "mode", "layer_type", "num_classes") if key in record]
    return ", ".join(known) or "no architecture recorded"


def load_network_weights(net: nn.Module, path: str | Path, expected: str = "") -> None:
    """Load ``net``'s weights from ``path`` (see :func:`network_state_dict`), strictly.

    Args:
        net: the network to fill.
        path: a Lightning checkpoint, an exported student or a bare state dict.
        expected: what ``net`` is (``arch=resnet20, num_classes=10``), named in the error if the weights do not fit.

    Raises:
        ValueError: the weights do not fit ``net``; the message names both architectures, the path and the first
            missing, unexpected or mis-shaped keys (not the whole list).
    """
    checkpoint = read_checkpoint(path)
    state = network_state_dict(checkpoint)
    _check_fits(net, state, path, describe_checkpoint(checkpoint), expected or type(net).__name__)
    net.load_state_dict(state)
