"""AdderNet's adaptive learning rate (Chen et al., CVPR 2020, eq. 13).

Each adder layer's weight gradient is rescaled before the optimiser step:
``g_l <- eta * sqrt(k_l) * g_l / ||g_l||_2``, with ``k_l`` the number of elements of the layer's weight.

Where it happens, and why: the reference code rescales inside the layer's backward. Under data-parallel
training that would normalise each replica's share of the gradient before the all-reduce, which is not the
update one process with the same global batch makes. We rescale after the gradients are complete — after
DDP's all-reduce and after gradient accumulation — and before gradient clipping and the optimiser step
(``LightningModule.on_before_optimizer_step``; in a plain loop, call it between ``backward()`` and ``step()``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from pkkd_lightning.ops.adder import Adder2d


@torch.no_grad()
def rescale_adder_gradients(model: nn.Module, eps: float = 1e-12) -> int:
    """Apply eq. 13 in place to the weight gradient of every :class:`Adder2d` in ``model`` with ``eta``.

    Args:
        model: any module; layers other than ``Adder2d`` (and adder layers with ``eta=None`` or no gradient)
            are left alone.
        eps: floor of the gradient norm, so an all-zero gradient stays zero instead of becoming NaN.

    Returns:
        How many layers were rescaled.
    """
    count = 0
    for layer in model.modules():
        if isinstance(layer, Adder2d) and layer.eta is not None and layer.weight.grad is not None:
            grad = layer.weight.grad
            grad.mul_(layer.eta * math.sqrt(grad.numel()) / grad.norm().clamp_min(eps))
            count += 1
    return count
