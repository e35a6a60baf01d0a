"""Why a loss term steers training or not: gradient shares, and the kernel maps' statistics.

**Gradient shares**: how much of a layer's weight gradient each weighted loss term contributes.

The student's loss is a weighted sum ``L = (1 - beta) CE + beta tau^2 KL + lambda L_feat``. Which term steers a
layer is not visible from the loss values: AdderNet's adaptive learning rate rescales every adder layer's
gradient to a fixed norm, so a layer follows whichever term dominates *its* gradient. For a parameter ``W`` and
weighted terms ``T_1..T_n`` the share of term ``i`` is

    share_i(W) = ||dT_i/dW||_2 / sum_j ||dT_j/dW||_2,

which lies in [0, 1] and sums to 1 over the terms (a term that does not reach ``W`` has share 0).

**Kernel statistics** of one distillation point (:func:`kernel_statistics`): the matching loss before the
training-only transform rho, ``mean((g_A - h_C)^2)``, beside the one after it that training minimises, and the mean
and spread (standard deviation over every element) of the two kernel maps. A transform that absorbs the mismatch
shows as a large loss before it and a small one after; a kernel map squeezed into a near-constant shows as a small
spread.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from pkkd_lightning.distill.distiller import PointFeatures


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


def kernel_statistics(features: PointFeatures) -> dict[str, torch.Tensor]:
    """Detached statistics of one point's kernel maps (see the module docstring): ``loss_before_transform``,
    ``loss_after_transform``, ``student_mean``, ``student_spread``, ``teacher_mean``, ``teacher_spread``."""
    student, transformed = features.student_before_transform.detach(), features.student.detach()
    teacher = features.teacher.detach()
    return {
        "loss_before_transform": F.mse_loss(student, teacher),
        "loss_after_transform": F.mse_loss(transformed, teacher),
        "student_mean": student.mean(),
        "student_spread": student.std(),
        "teacher_mean": teacher.mean(),
        "teacher_spread": teacher.std(),
    }
