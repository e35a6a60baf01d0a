"""Progressive kernel-based knowledge distillation (PKKD, Xu et al., NeurIPS 2020)."""

from pkkd_lightning.distill.taps import FeatureTaps, TapRecord, default_tap_paths

__all__ = ["FeatureTaps", "TapRecord", "default_tap_paths"]
