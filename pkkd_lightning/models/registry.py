"""Building a model by architecture spec, as a CNN (``conv``) or its AdderNet twin (``adder``).

The specs (built-in names, ``timm:<name>``, ``<module>:<function>``, registered names) are resolved in
:mod:`pkkd_lightning.models.specs`. Both flavours come from one code path: :func:`build_model` constructs the CNN and,
for ``layer_type="adder"``, converts it with :func:`~pkkd_lightning.models.adderize.adderize` using the
AdderNet conventions (stem and classifier multiplication-based, plus any ``keep`` the user lists; every other
convolution, 1x1 shortcuts and depthwise layers included, an ``Adder2d``; the built-in models have a BatchNorm
after each of those layers, and :func:`~pkkd_lightning.models.structure.unnormalized_adder_layers` names the
layers of other models that lack one). The twins thus share
module paths, state-dict keys and parameter counts. ``init`` chooses the initialisation (``models.init``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch.nn as nn

from pkkd_lightning.models.adderize import adderize, default_keep_paths, expand_keep
from pkkd_lightning.models.init import InitScheme, init_adder_filters_
from pkkd_lightning.models.specs import resolve_factory
from pkkd_lightning.validation import check_choice, choices

#: An architecture spec (:mod:`pkkd_lightning.models.specs`): a built-in or registered name, ``timm:<name>`` or
#: ``<module>:<function>``.
Arch = str

#: A CNN (``conv``) or its AdderNet twin (``adder``).
LayerType = Literal["conv", "adder"]
LAYER_TYPES: tuple[str, ...] = choices(LayerType)


def build_model(
    name: Arch,
    layer_type: LayerType = "conv",
    num_classes: int = 10,
    init: InitScheme = "official",
    adder_kwargs: dict[str, Any] | None = None,
    keep: Sequence[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model as a CNN or as its adder twin.

    Args:
        name: an architecture spec (:mod:`~pkkd_lightning.models.specs`): a built-in name (``resnet20``,
            ``resnet32``, ``resnet56``, ``vgg_small``, ``resnet18``, ``resnet50``), ``timm:<name>``,
            ``<module>:<function>`` or a name registered with :func:`~pkkd_lightning.models.register_model`.
        layer_type: ``"conv"`` for the CNN, ``"adder"`` for the ANN (AdderNet, Chen et al., CVPR 2020).
        num_classes: number of output logits.
        init: ``official`` (the AdderNet code's: adder filters ``N(0, 1)``, a CIFAR ResNet's stem and classifier at
            PyTorch's default) or ``kaiming`` (He et al. everywhere, copied into the adder layers); see
            :mod:`pkkd_lightning.models.init`.
        adder_kwargs: ``Adder2d``-only arguments for the adder layers (``eta``, ``backend``, ``chunk_bytes``);
            only allowed with ``layer_type="adder"``.
        keep: module paths or glob patterns (``"*.se.*"``) of further convolutions to keep multiplication-based,
            on top of AdderNet's stem and classifier (:func:`~pkkd_lightning.models.adderize.default_keep_paths`).
        **kwargs: further arguments of the architecture's constructor (``in_chans``; timm arguments for the
            ImageNet ResNets).

    Returns:
        The model; its ``forward`` returns logits of shape (N, num_classes).

    Raises:
        ValueError: for an unknown ``name`` (with the closest known names), ``layer_type`` or ``init``, a ``keep``
            pattern that matches no convolution, a layer that cannot become an adder layer (named), or
            ``adder_kwargs`` with ``layer_type="conv"``.
    """
    factory = resolve_factory(name)
    check_choice("layer_type", layer_type, LayerType)
    check_choice("init", init, InitScheme)
    if adder_kwargs and layer_type != "adder":
        raise ValueError(f"adder_kwargs {adder_kwargs} only apply to layer_type='adder', got {layer_type!r}")
    model = factory(num_classes=num_classes, **kwargs)
    official_init_ = getattr(model, "official_init_", None)
    if init == "official" and callable(official_init_):
        official_init_()
    if layer_type == "adder":
        keep_paths = [*default_keep_paths(model), *expand_keep(model, keep or [])]
        model = adderize(model, keep=keep_paths, **(adder_kwargs or {}))
        if init == "official":
            init_adder_filters_(model)
    return model
