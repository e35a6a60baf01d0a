"""Random-number generator states as plain tensors and lists, so that they load with ``weights_only=True``.

Lightning does not checkpoint generator states; PKKDModule does (see ``on_save_checkpoint``), so that anything
that draws random numbers during training continues after a resume as it would have without the interruption.
``numpy``'s state holds an ndarray, which ``torch.load(weights_only=True)`` (the default for
``Trainer.fit(ckpt_path=...)``) refuses, hence this conversion.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def collect_rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and PyTorch's (CPU and CUDA) generators."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states`."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def resume_rng_states(states: dict[str, Any]) -> None:
    """Restore checkpointed states at ``on_train_start`` of a resumed run, as the uninterrupted run had them.

    The training data draws nothing from these generators (its order and augmentation are seeded per epoch and
    sample, ``pkkd_lightning.data.sampler``; the loader has its own generator), so restoring them is all a
    resumed run needs for anything else that draws random numbers during training (dropout, mixup).
    """
    restore_rng_states(states)
