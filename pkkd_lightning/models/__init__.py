"""The model zoo: CIFAR ResNets, VGG-small and timm ImageNet ResNets, each as a CNN or its AdderNet twin."""

from pkkd_lightning.models.adderize import adderize, default_keep_paths
from pkkd_lightning.models.init import INIT_SCHEMES, InitScheme
from pkkd_lightning.models.registry import LAYER_TYPES, Arch, LayerType, build_model, list_models

__all__ = [
    "INIT_SCHEMES",
    "LAYER_TYPES",
    "Arch",
    "InitScheme",
    "LayerType",
    "adderize",
    "build_model",
    "default_keep_paths",
    "list_models",
]
