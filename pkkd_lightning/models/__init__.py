"""The model zoo: CIFAR ResNets, VGG-small and timm ImageNet ResNets, each as a CNN or its AdderNet twin."""

from typing import Any

from pkkd_lightning.distill.taps import default_tap_paths
from pkkd_lightning.models.adderize import adderize, default_keep_paths
from pkkd_lightning.models.registry import build_model, list_models

__all__ = ["OpCount", "adderize", "build_model", "count_ops", "default_keep_paths", "default_tap_paths", "list_models"]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `python -m pkkd_lightning.models.op_counter` does not find its own module already
    # imported by this package (runpy's "found in sys.modules" warning).
    if name in ("OpCount", "count_ops"):
        from pkkd_lightning.models import op_counter

        return getattr(op_counter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
