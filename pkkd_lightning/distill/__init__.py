"""Progressive kernel-based knowledge distillation (PKKD, Xu et al., NeurIPS 2020)."""

from pkkd_lightning.distill.distiller import (
    DistillerOutput,
    FeatureDistiller,
    FeatureSpace,
    KernelDistiller,
    PointFeatures,
    TransformInput,
)
from pkkd_lightning.distill.kernels import Centering
from pkkd_lightning.distill.losses import LossWeightName, LossWeights
from pkkd_lightning.distill.taps import FeatureTaps, TapRecord, default_tap_paths

__all__ = [
    "Centering",
    "DistillerOutput",
    "FeatureDistiller",
    "FeatureSpace",
    "FeatureTaps",
    "KernelDistiller",
    "LossWeightName",
    "LossWeights",
    "PointFeatures",
    "TapRecord",
    "TransformInput",
    "default_tap_paths",
]
