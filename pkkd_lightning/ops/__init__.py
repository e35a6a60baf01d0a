"""Adder layers: the functional op, the ``nn.Conv2d``-compatible module and AdderNet's adaptive learning rate."""

from pkkd_lightning.ops.adaptive_lr import rescale_adder_gradients
from pkkd_lightning.ops.adder import Adder2d, adder2d
from pkkd_lightning.ops.backends import BACKENDS

__all__ = ["BACKENDS", "Adder2d", "adder2d", "rescale_adder_gradients"]
