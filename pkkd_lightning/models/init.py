"""Weight initialisation shared by the CIFAR model families."""

from __future__ import annotations

import torch.nn as nn


def init_conv_bn_(model: nn.Module) -> None:
    """He et al. (2015) normal init (fan-out, ReLU) for every convolution; BatchNorm scale 1, shift 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
