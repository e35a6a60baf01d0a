"""What each ``mode`` trains, and how its networks are built (one place for the mode -> network rule).

| mode   | student        | teacher                                     |
|--------|----------------|---------------------------------------------|
| `cnn`  | a CNN          | none                                        |
| `ann`  | an AdderNet    | none                                        |
| `kd`   | an AdderNet    | a fixed CNN (soft logits only)              |
| `pkkd` | an AdderNet    | a CNN, jointly trained or fixed, + features |

Every network is built under its own random-number generator, seeded from the global seed and the network's
layer type (:func:`build_network`). So the CNN of a ``cnn`` run and the teacher of a ``pkkd`` run with the same
seed start from the same weights, as do the ANNs of ``ann`` and ``pkkd`` runs, and building the networks draws
nothing from the global generator: every mode sees the same batches and augmentations for a given seed. Paired
comparisons between modes then differ in the method only.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn as nn

from pkkd_lightning.models import Arch, InitScheme, LayerType, build_model

Mode = Literal["cnn", "ann", "kd", "pkkd"]
#: ``joint``: the teacher trains with the student (PKKD's progressive teacher); ``fixed``: loaded and frozen.
TeacherTraining = Literal["joint", "fixed"]

#: Added to the global seed to seed the construction of a network of each layer type.
_SEED_OFFSETS: dict[str, int] = {"conv": 0, "adder": 1}


def student_layer_type(mode: Mode) -> LayerType:
    """``conv`` for a ``cnn`` run, ``adder`` for every other mode."""
    return "conv" if mode == "cnn" else "adder"


def build_network(
    arch: Arch,
    layer_type: LayerType,
    num_classes: int,
    init: InitScheme = "official",
    adder_kwargs: dict[str, Any] | None = None,
    keep: list[str] | None = None,
) -> nn.Module:
    """:func:`~pkkd_lightning.models.build_model` under a generator seeded with ``(global seed, layer type)``.

    The global seed is ``torch.initial_seed()`` (what ``seed_everything`` set); the global generator's state is
    left exactly as it was.
    """
    seed = (torch.initial_seed() + _SEED_OFFSETS[layer_type]) % 2**63
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, layer_type, num_classes, init=init, adder_kwargs=adder_kwargs, keep=keep)
