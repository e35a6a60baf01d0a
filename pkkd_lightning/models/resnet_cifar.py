"""CIFAR ResNet-20/32/56 (He et al., "Deep Residual Learning", CVPR 2016, sec. 4.2) as AdderNet uses them.

Depth ``6n + 2``: a 3x3 stem convolution with 16 channels, three stages of ``n`` :class:`BasicBlock` s with
16, 32 and 64 channels (the first block of stages 2 and 3 has stride 2), global average pooling and a
classifier. Two details follow the AdderNet reference ResNet-20 (Chen et al., CVPR 2020) rather than He et al.:

* shortcuts use *option B*: a 1x1 convolution + BatchNorm where the shape changes (``downsample``), so that in
  the adder twin the projection becomes an adder layer too (He et al. use parameter-free option A on CIFAR);
* the classifier is a 1x1 ``nn.Conv2d`` (multiplication-based, no bias) applied to the pooled features,
  followed by ``BatchNorm2d`` on the logits, then flattened: ``z = flatten(BN(W * avgpool(x)))``.

The models are built with ``nn.Conv2d`` everywhere; the adder twin is made by
:func:`~pkkd_lightning.models.adderize.adderize`, which keeps the stem (``conv1``) and the classifier
(``fc``) and swaps every other convolution for an ``Adder2d`` (each is already followed by a BatchNorm).
Module paths: ``conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,downsample.{0,1}}, fc, fc_bn``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pkkd_lightning.models.init import init_conv_bn_

#: Channels of the three stages.
WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and ReLU plus a shortcut: ``relu(bn2(conv2(h)) + s(x))``.

    Args:
        in_channels: channels of the block input.
        out_channels: channels of both convolutions and of the output.
        stride: stride of the first convolution (and of the projection shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            # Option B (projection), as in the AdderNet reference: it becomes an adder layer in the twin.
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward pass."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with ``blocks_per_stage`` basic blocks in each of three stages.

    Args:
        blocks_per_stage: ``n`` in depth ``6n + 2`` (3, 5, 9 for ResNet-20, 32, 56).
        num_classes: number of output logits.
        in_chans: channels of the input image.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be a positive int, got {blocks_per_stage}")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        in_channels = WIDTHS[0]
        for index, width in enumerate(WIDTHS):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(in_channels, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = width
        # The reference uses AvgPool2d(8); adaptive pooling gives the same result on 32x32 inputs.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(in_channels, num_classes, 1, bias=False)
        self.fc_bn = nn.BatchNorm2d(num_classes)
        init_conv_bn_(self)

    def official_init_(self) -> None:
        """The AdderNet code's ``resnet20.py``: stem and classifier at PyTorch's default init (see ``models.init``)."""
        self.conv1.reset_parameters()
        self.fc.reset_parameters()

    def get_classifier(self) -> nn.Module:
        """The classification layer (timm's accessor name): the 1x1 conv ``fc``."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.fc_bn(self.fc(self.avgpool(x)))
        return torch.flatten(x, 1)


def resnet20(num_classes: int = 10, **kwargs: int) -> CifarResNet:
    """CIFAR ResNet-20 (3 blocks per stage, about 0.27M parameters).

    Args:
        num_classes: number of output logits.
        **kwargs: further :class:`CifarResNet` arguments (``in_chans``).
    """
    return CifarResNet(3, num_classes, **kwargs)


def resnet32(num_classes: int = 10, **kwargs: int) -> CifarResNet:
    """CIFAR ResNet-32 (5 blocks per stage, about 0.47M parameters).

    Args:
        num_classes: number of output logits.
        **kwargs: further :class:`CifarResNet` arguments (``in_chans``).
    """
    return CifarResNet(5, num_classes, **kwargs)


def resnet56(num_classes: int = 10, **kwargs: int) -> CifarResNet:
    """CIFAR ResNet-56 (9 blocks per stage, about 0.86M parameters).

    Args:
        num_classes: number of output logits.
        **kwargs: further :class:`CifarResNet` arguments (``in_chans``).
    """
    return CifarResNet(9, num_classes, **kwargs)
