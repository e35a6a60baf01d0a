"""The model registry: every architecture by name, as a CNN (``conv``) or its AdderNet twin (``adder``).

The registry is a plain dict filled here from explicit imports, so it never depends on which modules some
caller happened to import. Both flavours come from one code path: :func:`build_model` constructs the CNN and,
for ``layer_type="adder"``, converts it with :func:`~pkkd_lightning.models.adderize.adderize` using the
AdderNet conventions (stem and classifier multiplication-based; every other convolution, 1x1 shortcuts
included, an ``Adder2d``; the models already have a BatchNorm after each of those layers). The twins thus share
module paths, state-dict keys and parameter counts. ``init`` chooses the initialisation (``models.init``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch.nn as nn

from pkkd_lightning.models.adderize import adderize, default_keep_paths
from pkkd_lightning.models.imagenet import resnet18, resnet50
from pkkd_lightning.models.init import InitScheme, init_adder_filters_
from pkkd_lightning.models.resnet_cifar import resnet20, resnet32, resnet56
from pkkd_lightning.models.vgg_small import vgg_small
from pkkd_lightning.validation import check_choice, choices

#: Registered architecture names.
Arch = Literal["resnet20", "resnet32", "resnet56", "vgg_small", "resnet18", "resnet50"]

#: Name -> constructor ``(num_classes, **kwargs) -> nn.Module`` building the CNN.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "vgg_small": vgg_small,
    "resnet18": resnet18,
    "resnet50": resnet50,
}

#: A CNN (``conv``) or its AdderNet twin (``adder``).
LayerType = Literal["conv", "adder"]
LAYER_TYPES: tuple[str, ...] = choices(LayerType)


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(choices(Arch))


def build_model(
    name: Arch,
    layer_type: LayerType = "conv",
    num_classes: int = 10,
    init: InitScheme = "official",
    adder_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model as a CNN or as its adder twin.

    Args:
        name: one of :func:`list_models` (``resnet20``, ``resnet32``, ``resnet56``, ``vgg_small``, ``resnet18``,
            ``resnet50``).
        layer_type: ``"conv"`` for the CNN, ``"adder"`` for the ANN (AdderNet, Chen et al., CVPR 2020).
        num_classes: number of output logits.
        init: ``official`` (the AdderNet code's: adder filters ``N(0, 1)``, a CIFAR ResNet's stem and classifier at
            PyTorch's default) or ``kaiming`` (He et al. everywhere, copied into the adder layers); see
            :mod:`pkkd_lightning.models.init`.
        adder_kwargs: ``Adder2d``-only arguments for the adder layers (``eta``, ``backend``, ``chunk_bytes``);
            only allowed with ``layer_type="adder"``.
        **kwargs: further arguments of the architecture's constructor (``in_chans``; timm arguments for the
            ImageNet ResNets).

    Returns:
        The model; its ``forward`` returns logits of shape (N, num_classes).

    Raises:
        ValueError: for an unknown ``name``, ``layer_type`` or ``init``, or ``adder_kwargs`` with
            ``layer_type="conv"``.
    """
    check_choice("arch", name, Arch)
    check_choice("layer_type", layer_type, LayerType)
    check_choice("init", init, InitScheme)
    if adder_kwargs and layer_type != "adder":
        raise ValueError(f"adder_kwargs {adder_kwargs} only apply to layer_type='adder', got {layer_type!r}")
    model = MODELS[name](num_classes=num_classes, **kwargs)
    official_init_ = getattr(model, "official_init_", None)
    if init == "official" and callable(official_init_):
        official_init_()
    if layer_type == "adder":
        model = adderize(model, keep=default_keep_paths(model), **(adder_kwargs or {}))
        if init == "official":
            init_adder_filters_(model)
    return model
