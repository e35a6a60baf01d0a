"""ImageNet ResNet-18 and ResNet-50 (He et al., CVPR 2016), built by timm and never with pretrained weights.

timm's ``resnet18``/``resnet50`` are the standard architectures: a 7x7 stride-2 stem convolution + BN + ReLU +
3x3 max-pool, four stages ``layer1..4`` of BasicBlocks (ResNet-18) or Bottlenecks (ResNet-50, stride on the
3x3 conv) with a 1x1 conv + BN ``downsample`` projection where the shape changes, global average pooling and a
linear classifier ``fc``. Every convolution is followed by a BatchNorm, which AdderNet needs after each adder
layer. The adder twin comes from :func:`~pkkd_lightning.models.adderize.adderize` with its default keep list:
the stem ``conv1`` stays a convolution and the linear ``fc`` is not a convolution, so both stay
multiplication-based, as in the AdderNet reference ResNets (Chen et al., CVPR 2020).
"""

from __future__ import annotations

from typing import Any

import timm
import torch.nn as nn


def _timm_resnet(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    if kwargs.pop("pretrained", False):
        raise ValueError(
            f"{name}: pretrained weights are not supported (the PKKD teacher is trained from scratch with the "
            "student); load a checkpoint into the built model instead"
        )
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


def resnet18(num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """timm ResNet-18 (11.7M parameters, 1.8G multiply-adds at 224x224).

    Args:
        num_classes: number of output logits.
        **kwargs: further ``timm.create_model`` arguments (``in_chans``, ``drop_rate``, ...).
    """
    return _timm_resnet("resnet18", num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """timm ResNet-50 (25.6M parameters, 4.1G multiply-adds at 224x224).

    Args:
        num_classes: number of output logits.
        **kwargs: further ``timm.create_model`` arguments (``in_chans``, ``drop_rate``, ...).
    """
    return _timm_resnet("resnet50", num_classes, **kwargs)
