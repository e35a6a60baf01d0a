"""The model registry: every architecture by name, as a CNN (``conv``) or its AdderNet twin (``adder``).

The registry is a plain dict filled here from explicit imports, so it never depends on which modules some
caller happened to import. Both flavours come from one code path: :func:`build_model` constructs the CNN and,
for ``layer_type="adder"``, converts it with :func:`~pkkd_lightning.models.adderize.adderize` using the
AdderNet conventions (stem and classifier multiplication-based; every other convolution, 1x1 shortcuts
included, an ``Adder2d``; the models already have a BatchNorm after each of those layers). The twins thus share
module paths, state-dict keys and parameter counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from pkkd_lightning.models.adderize import adderize, default_keep_paths
from pkkd_lightning.models.imagenet import resnet18, resnet50
from pkkd_lightning.models.resnet_cifar import resnet20, resnet32, resnet56
from pkkd_lightning.models.vgg_small import vgg_small

#: Name -> constructor ``(num_classes, **kwargs) -> nn.Module`` building the CNN.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "vgg_small": vgg_small,
    "resnet18": resnet18,
    "resnet50": resnet50,
}

#: Accepted values of ``layer_type``.
LAYER_TYPES = ("conv", "adder")


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(MODELS)


def build_model(
    name: str,
    layer_type: str = "conv",
    num_classes: int = 10,
    adder_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model as a CNN or as its adder twin.

    Args:
        name: one of :func:`list_models` (``resnet20``, ``resnet32``, ``resnet56``, ``vgg_small``, ``resnet18``,
            ``resnet50``).
        layer_type: ``"conv"`` for the CNN, ``"adder"`` for the ANN (AdderNet, Chen et al., CVPR 2020).
        num_classes: number of output logits.
        adder_kwargs: ``Adder2d``-only arguments for the adder layers (``eta``, ``backend``, ``chunk_bytes``);
            only allowed with ``layer_type="adder"``.
        **kwargs: further arguments of the architecture's constructor (``in_chans``; timm arguments for the
            ImageNet ResNets).

    Returns:
        The model; its ``forward`` returns logits of shape (N, num_classes).

    Raises:
        ValueError: for an unknown ``name`` or ``layer_type``, or ``adder_kwargs`` with ``layer_type="conv"``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; accepted values: {', '.join(list_models())}")
    if layer_type not in LAYER_TYPES:
        raise ValueError(f"layer_type must be one of {LAYER_TYPES}, got {layer_type!r}")
    if adder_kwargs and layer_type != "adder":
        raise ValueError(f"adder_kwargs {adder_kwargs} only apply to layer_type='adder', got {layer_type!r}")
    model = MODELS[name](num_classes=num_classes, **kwargs)
    if layer_type == "adder":
        model = adderize(model, keep=default_keep_paths(model), **(adder_kwargs or {}))
    return model
