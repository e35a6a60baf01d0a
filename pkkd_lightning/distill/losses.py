"""Loss terms of PKKD (Xu et al., NeurIPS 2020, eqs. 10-12), as functions of tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def soft_logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Hinton's distillation term ``tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau))``, mean over the batch.

    The teacher logits are detached: the student learns from the teacher, never the reverse through this term.
    """
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    log_p_student = F.log_softmax(student_logits / tau, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / tau, dim=1)
    return tau**2 * F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def feature_matching_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """``L_feat = sum_m mean((rho_m(g_A^m) - h_C^m)^2)`` over the distillation points, teacher side detached.

    Args:
        student: the ANN's kernel features after the linear transform, one per distillation point.
        teacher: the CNN's kernel features at the same points, same shapes.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(f"need matching non-empty feature lists, got {len(student)} and {len(teacher)}")
    terms = []
    for s, t in zip(student, teacher, strict=True):
        if s.shape != t.shape:
            raise ValueError(f"student feature {tuple(s.shape)} and teacher feature {tuple(t.shape)} differ")
        terms.append(F.mse_loss(s, t.detach()))
    return torch.stack(terms).sum()


def blended_student_loss(
    ce: torch.Tensor, soft: torch.Tensor, feature: torch.Tensor, beta: float, feature_weight: float
) -> torch.Tensor:
    """``L_A = (1 - beta) * CE(z_A, y) + beta * tau^2 KL(...) + lambda * L_feat`` (PKKD eq. 12)."""
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    return (1 - beta) * ce + beta * soft + feature_weight * feature
