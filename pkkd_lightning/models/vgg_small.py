"""VGG-small, the CIFAR VGG that AdderNet (Chen et al., CVPR 2020) and PKKD (Xu et al., NeurIPS 2020) report.

VGG-small comes from LQ-Nets (Zhang et al., ECCV 2018), itself BinaryConnect's CIFAR VGG (Courbariaux et al.,
NeurIPS 2015) with the hidden fully-connected layers removed. Exact definition used here, for 32x32 inputs::

    layer1: conv3x3(in, 128) BN ReLU | conv3x3(128, 128) BN ReLU | maxpool 2x2     -> 128 x 16 x 16
    layer2: conv3x3(128, 256) BN ReLU | conv3x3(256, 256) BN ReLU | maxpool 2x2    -> 256 x 8 x 8
    layer3: conv3x3(256, 512) BN ReLU | conv3x3(512, 512) BN ReLU | maxpool 2x2    -> 512 x 4 x 4
    fc:     flatten, Linear(512 * 4 * 4, num_classes) with bias

Every 3x3 convolution has padding 1, stride 1 and no bias (a BatchNorm follows it); about 4.66M parameters for
10 classes. The first convolution, ``layer1.conv1``, is the stem and stays multiplication-based in the adder
twin, as does the linear classifier ``fc``; :func:`~pkkd_lightning.models.adderize.adderize` turns the other
five convolutions into adder layers. Stages are named ``layer1..3`` like the ResNets', so
:func:`~pkkd_lightning.distill.taps.default_tap_paths` finds the last convolution of each pair.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pkkd_lightning.models.init import init_conv_bn_

#: Output channels of the three conv pairs.
WIDTHS = (128, 256, 512)
#: Spatial size of the last feature map for 32x32 inputs (three 2x2 max-pools).
FINAL_SIZE = 4


class VGGStage(nn.Module):
    """Two 3x3 conv + BN + ReLU layers followed by a 2x2 max-pool.

    Args:
        in_channels: channels of the stage input.
        out_channels: channels of both convolutions.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stage forward pass; halves the spatial size."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.pool(x)


class VGGSmall(nn.Module):
    """VGG-small for 32x32 inputs (see the module docstring for the exact layers).

    Args:
        num_classes: number of output logits.
        in_chans: channels of the input image.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        in_channels = in_chans
        for index, width in enumerate(WIDTHS):
            self.add_module(f"layer{index + 1}", VGGStage(in_channels, width))
            in_channels = width
        self.fc = nn.Linear(in_channels * FINAL_SIZE * FINAL_SIZE, num_classes)
        init_conv_bn_(self)

    def get_classifier(self) -> nn.Module:
        """The classification layer (timm's accessor name): the linear ``fc``."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes); ``x`` must be (N, in_chans, 32, 32)."""
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(x, 1))


def vgg_small(num_classes: int = 10, **kwargs: int) -> VGGSmall:
    """VGG-small (about 4.66M parameters for 10 classes).

    Args:
        num_classes: number of output logits.
        **kwargs: further :class:`VGGSmall` arguments (``in_chans``).
    """
    return VGGSmall(num_classes, **kwargs)
