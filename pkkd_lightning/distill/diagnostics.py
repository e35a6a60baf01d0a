"""Gradient shares: how much of a layer's weight gradient each weighted loss term contributes.

The student's loss is a weighted sum ``L = (1 - beta) CE + beta tau^2 KL + lambda L_feat``. Which term steers a
layer is not visible from the loss values: AdderNet's adaptive learning rate rescales every adder layer's
gradient to a fixed norm, so a layer follows whichever term dominates *its* gradient. For a parameter ``W`` and
weighted terms ``T_1..T_n`` the share of term ``i`` is

    share_i(W) = ||dT_i/dW||_2 / sum_j ||dT_j/dW||_2,

which lies in [0, 1] and sums to 1 over the terms (a term that does not reach ``W`` has share 0).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def gradient_shares(
    terms: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """``{param name: {term name: share}}`` for every parameter and weighted loss term (see the module docstring).

    The terms' autograd graphs are kept (``retain_graph``), so the caller can still back-propagate their sum.

    Args:
        terms: scalar loss terms, each already multiplied by its weight.
        params: the parameters to look at, by name.

    Returns:
        The shares; all 0 for a parameter that no term reaches.
    """
    tensors = list(params.values())
    norms: dict[str, list[float]] = {}
    for term_name, term in terms.items():
        if not term.requires_grad:
            norms[term_name] = [0.0] * len(tensors)
            continue
        grads = torch.autograd.grad(term, tensors, retain_graph=True, allow_unused=True)
        norms[term_name] = [0.0 if g is None else g.norm().item() for g in grads]
    shares: dict[str, dict[str, float]] = {}
    for index, param_name in enumerate(params):
        total = sum(values[index] for values in norms.values())
        shares[param_name] = {name: (values[index] / total if total > 0 else 0.0) for name, values in norms.items()}
    return shares
