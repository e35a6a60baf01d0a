"""Weight initialisation: the official AdderNet code's, or He et al.'s everywhere.

``official`` **[code]** follows the public AdderNet code (huawei-noah/AdderNet): every adder filter is drawn from
``N(0, 1)`` (``adder.py``: ``nn.init.normal_(torch.randn(...))``), and the CIFAR ResNet's stem and classifier
convolutions keep PyTorch's default initialisation (``resnet20.py`` initialises no convolution; its BatchNorms
start at weight 1, bias 0). The multiplication-based convolutions of the body (the CNN twin's) use He et al.'s
normal initialisation (fan-out, ReLU) **[ours: the official code has no CNN twin]**.

``kaiming`` **[ours]** is this project's earlier default: He et al.'s initialisation for every convolution, copied
into the adder layers. With filters that small, ``||x - f||_1 ~ ||x||_1`` and every output channel of an adder
layer starts nearly identical (mean |correlation| between channels 0.99 and more at the first adder layer, about
0.65 with ``N(0, 1)``).
"""

from __future__ import annotations

from typing import Literal

import torch.nn as nn

from pkkd_lightning.ops import Adder2d
from pkkd_lightning.validation import choices

InitScheme = Literal["official", "kaiming"]
INIT_SCHEMES: tuple[str, ...] = choices(InitScheme)


def init_conv_bn_(model: nn.Module) -> None:
    """He et al. (2015) normal init (fan-out, ReLU) for every convolution; BatchNorm scale 1, shift 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def init_adder_filters_(model: nn.Module) -> None:
    """Draw every ``Adder2d`` filter from ``N(0, 1)``, as the official ``adder2d`` does."""
    for module in model.modules():
        if isinstance(module, Adder2d):
            nn.init.normal_(module.weight, 0.0, 1.0)
