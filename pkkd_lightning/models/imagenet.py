"""ImageNet ResNet-18 and ResNet-50 (He et al., CVPR 2016), built by timm and never with pretrained weights.

timm's ``resnet18``/``resnet50`` are the standard architectures: a 7x7 stride-2 stem convolution + BN + ReLU +
3x3 max-pool, four stages ``layer1..4`` of BasicBlocks (ResNet-18) or Bottlenecks (ResNet-50, stride on the
3x3 conv) with a 1x1 conv + BN ``downsample`` projection where the shape changes, global average pooling and a
linear classifier ``fc``. Every convolution is followed by a BatchNorm, which AdderNet needs after each adder
layer. The adder twin comes from :func:`~pkkd_lightning.models.adderize.adderize` with its default keep list:
the stem ``conv1`` stays a convolution and the classifier is not a convolution, so both stay
multiplication-based, as in the AdderNet reference ResNets (Chen et al., CVPR 2020).

The classifier follows the official AdderNet ``resnet50.py`` **[code]** by default (``head="official"``): a
1x1 convolution with bias on the pooled features followed by a BatchNorm on the logits, written here as the
equivalent ``Linear`` + ``BatchNorm1d`` on the flattened features (:class:`LogitBatchNormHead`), initialised as
that file does (He et al. fan-out for the weights, BatchNorm 1/0). ResNet-18 gets the same head **[ours: the
official code has only ResNet-50]**. ``head="timm"`` keeps timm's plain ``Linear`` classifier. Both twins always
share the head, so a CNN and its ANN have the same parameters.
"""

from __future__ import annotations

from typing import Any, Literal

import timm
import torch
import torch.nn as nn

from pkkd_lightning.validation import check_choice

HeadKind = Literal["official", "timm"]


class LogitBatchNormHead(nn.Module):
    """``z = BN(W h + b)``: the official AdderNet ResNet-50 classifier (a 1x1 conv with bias, then ``bn2``).

    Args:
        in_features: width of the pooled features ``h``.
        num_classes: number of logits.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)
        self.bn = nn.BatchNorm1d(num_classes)
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) from pooled features (N, in_features)."""
        return self.bn(self.fc(features))


def _timm_resnet(name: str, num_classes: int, head: HeadKind = "official", **kwargs: Any) -> nn.Module:
    if kwargs.pop("pretrained", False):
        raise ValueError(
            f"{name}: pretrained weights are not supported (the PKKD teacher is trained from scratch with the "
            "student); load a checkpoint into the built model instead"
        )
    check_choice("head", head, HeadKind)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if head == "official":
        model.fc = LogitBatchNormHead(model.fc.in_features, num_classes)
    return model


def resnet18(num_classes: int = 1000, head: HeadKind = "official", **kwargs: Any) -> nn.Module:
    """timm ResNet-18 (11.7M parameters, 1.8G multiply-adds at 224x224).

    Args:
        num_classes: number of output logits.
        head: ``official`` (:class:`LogitBatchNormHead`) or ``timm`` (a plain ``Linear``).
        **kwargs: further ``timm.create_model`` arguments (``in_chans``, ``drop_rate``, ...).
    """
    return _timm_resnet("resnet18", num_classes, head, **kwargs)


def resnet50(num_classes: int = 1000, head: HeadKind = "official", **kwargs: Any) -> nn.Module:
    """timm ResNet-50 (25.6M parameters, 4.1G multiply-adds at 224x224).

    Args:
        num_classes: number of output logits.
        head: ``official`` (:class:`LogitBatchNormHead`) or ``timm`` (a plain ``Linear``).
        **kwargs: further ``timm.create_model`` arguments (``in_chans``, ``drop_rate``, ...).
    """
    return _timm_resnet("resnet50", num_classes, head, **kwargs)
