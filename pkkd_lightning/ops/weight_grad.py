"""AdderNet's full-precision weight gradient through a convolution's weight gradient.

AdderNet eq. 5 sets ``dY/dF = X - F``. Summed over every output position it becomes

    dL/dF[o, k] = sum_{n,p} G[n, o, p] * (X_p[n, k] - F[o, k])
                = conv2d_weight_grad(X, G)[o, k] - F[o, k] * sum_{n,p} G[n, o, p],

i.e. the weight gradient a convolution would get, minus the filter times the summed output gradient. The first
term is the library's (fast, memory-lean) convolution backward; no patch matrix is built.
"""

from __future__ import annotations

import torch

from pkkd_lightning.ops.geometry import AdderGeometry


def adder_weight_grad(
    grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, geom: AdderGeometry, groups: int = 1
) -> torch.Tensor:
    """``sum_{n,p} G[n,o,p] * (X_p[n,k] - F[o,k])`` (AdderNet eq. 5), shape of ``weight``; for ``groups`` > 1
    ``X_p`` is the patch of filter ``o``'s group, as the grouped convolution's weight gradient has it."""
    _, conv_grad, _ = torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, list(geom.stride), list(geom.padding), list(geom.dilation),
        False, [0, 0], groups, [False, True, False],
    )  # fmt: skip
    return conv_grad - weight * grad_out.sum(dim=(0, 2, 3)).view(-1, 1, 1, 1)
