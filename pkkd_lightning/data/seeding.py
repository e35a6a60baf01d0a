"""Seeds of the training stream: the run's seed, per-epoch seeds, and per-sample seeding of the global generators.

Batch order and augmentation are functions of ``(run seed, epoch, sample index)`` only, never of the state of the
global generators: an interrupted run resumes with the same data, and DDP ranks augment a sample exactly as a
single process does. Augmentations written against the global generators (torchvision draws from torch's, timm's
auto-augment policies from Python's ``random`` and NumPy's) are run inside :func:`seeded_rngs`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def run_seed(fallback: int) -> int:
    """The run's global seed: ``PL_GLOBAL_SEED``, which ``seed_everything`` (``--seed_everything`` of the CLI) sets
    in this process and which DDP processes inherit; ``fallback`` when no global seed was set.

    The environment variable, rather than ``torch.initial_seed()``, because it is the same on every rank and does
    not change when code re-seeds torch.
    """
    return int(os.environ.get("PL_GLOBAL_SEED", fallback))


def mix_seeds(*values: int) -> int:
    """A 64-bit seed from non-negative ints, with NumPy's ``SeedSequence`` hashing (``(1, 2)`` and ``(2, 1)`` or
    ``(seed, epoch + 1)`` and ``(seed + 1, epoch)`` give unrelated streams, unlike ``seed + epoch``)."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0])


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator, Python's ``random`` and NumPy's global generator; restore all three on exit.

    Code in the block draws a fixed stream whatever the generators' states before it, and the code around the
    block sees its own streams unchanged (as if the block drew nothing). CUDA generators are left alone.

    Args:
        seed: Non-negative int (NumPy's legacy generator gets ``seed % 2**32``).
    """
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
