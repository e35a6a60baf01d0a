"""The model zoo: CIFAR ResNets, VGG-small, timm ImageNet ResNets, any timm model and your own factories, each as a
CNN or its AdderNet twin."""

from pkkd_lightning.models.adderize import adderize, default_keep_paths
from pkkd_lightning.models.init import INIT_SCHEMES, InitScheme
from pkkd_lightning.models.registry import LAYER_TYPES, Arch, LayerType, build_model
from pkkd_lightning.models.specs import ARCH_HELP, list_models, register_model

__all__ = [
    "ARCH_HELP",
    "INIT_SCHEMES",
    "LAYER_TYPES",
    "Arch",
    "InitScheme",
    "LayerType",
    "adderize",
    "build_model",
    "default_keep_paths",
    "list_models",
    "register_model",
]
