"""pkkd-lightning: Adder Neural Networks trained with Progressive Kernel-based Knowledge Distillation."""

from pkkd_lightning.module import PKKDModule

__version__ = "0.1.0"
__all__ = ["PKKDModule"]
