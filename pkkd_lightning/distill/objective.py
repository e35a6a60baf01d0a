"""The losses of the two networks as named terms: ``L_A`` for the student, ``L_C`` for a jointly trained teacher.

    L_A = (1 - beta) CE(z_A, y) + beta tau^2 KL(p_C^tau || p_A^tau) + lambda L_feat        (PKKD eq. 12)
    L_C = CE(z_C, y) + mu tau^2 KL(p_A^tau || p_C^tau)                                       (mu = 0 by default)

Every term is returned by name so that the module logs them all and the gradient shares can be taken per part.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from pkkd_lightning.distill.losses import LossWeights, feature_matching_loss, soft_logit_loss


def student_terms(
    z_student: torch.Tensor,
    z_teacher: torch.Tensor | None,
    y: torch.Tensor,
    point_losses: Mapping[str, torch.Tensor],
    weights: LossWeights,
) -> dict[str, torch.Tensor]:
    """The terms of ``L_A``.

    Args:
        z_student, z_teacher: logits (``z_teacher`` None without a teacher: then ``L_A`` is the cross-entropy).
        y: labels.
        point_losses: the distillation points' matching losses (empty without feature distillation).
        weights: beta, lambda and tau.

    Returns:
        ``student_ce``, ``student_soft``, ``feature/<point>``, ``feature`` (as present), the weighted parts
        ``student/labels``, ``student/soft_logits``, ``student/features``, and their sum ``student``.
    """
    terms = {"student_ce": F.cross_entropy(z_student, y)}
    parts = {"labels": terms["student_ce"]}
    if z_teacher is not None:
        terms["student_soft"] = soft_logit_loss(z_student, z_teacher, weights.tau)
        parts = {
            "labels": (1 - weights.beta) * terms["student_ce"],
            "soft_logits": weights.beta * terms["student_soft"],
        }
    if point_losses:
        terms.update({f"feature/{path}": loss for path, loss in point_losses.items()})
        terms["feature"] = feature_matching_loss(point_losses)
        parts["features"] = weights.feature_weight * terms["feature"]
    terms.update({f"student/{name}": part for name, part in parts.items()})
    terms["student"] = sum(parts.values())
    return terms


def teacher_terms(
    z_teacher: torch.Tensor, z_student: torch.Tensor, y: torch.Tensor, tau: float, mutual_weight: float
) -> dict[str, torch.Tensor]:
    """The terms of ``L_C``: ``teacher_ce``, ``teacher_mutual`` (when ``mutual_weight`` > 0) and ``teacher``."""
    terms = {"teacher_ce": F.cross_entropy(z_teacher, y)}
    terms["teacher"] = terms["teacher_ce"]
    if mutual_weight > 0:
        terms["teacher_mutual"] = soft_logit_loss(z_teacher, z_student, tau)
        terms["teacher"] = terms["teacher"] + mutual_weight * terms["teacher_mutual"]
    return terms
