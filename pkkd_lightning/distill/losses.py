"""Loss terms of PKKD (Xu et al., NeurIPS 2020, eqs. 10-12), as functions of tensors, and their weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from pkkd_lightning.validation import check_number

#: The weights of the student's loss that a schedule may move (``LossWeightSchedule``).
LossWeightName = Literal["beta", "feature_weight", "tau"]


@dataclass(frozen=True)
class LossWeights:
    """``beta``, ``lambda`` (``feature_weight``) and ``tau`` of ``L_A``; every instance is validated.

    Attributes:
        beta: weight of the soft-logit term against cross-entropy, in [0, 1].
        feature_weight: lambda, weight of the feature loss, >= 0.
        tau: softmax temperature of the soft-logit term, > 0.
    """

    beta: float = 0.5
    feature_weight: float = 1.0
    tau: float = 4.0

    def __post_init__(self) -> None:
        check_number("model.beta", self.beta, low=0.0, high=1.0)
        check_number("model.feature_weight", self.feature_weight, low=0.0)
        check_number("model.tau", self.tau, low=0.0, low_open=True)


def soft_logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Hinton's distillation term ``tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau))``, mean over the batch.

    The teacher logits are detached: the student learns from the teacher, never the reverse through this term.
    """
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    log_p_student = F.log_softmax(student_logits / tau, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / tau, dim=1)
    return tau**2 * F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def point_matching_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean((rho(g_A) - h_C)^2)`` at one distillation point, the teacher side detached."""
    if student.shape != teacher.shape:
        raise ValueError(f"student feature {tuple(student.shape)} and teacher feature {tuple(teacher.shape)} differ")
    return F.mse_loss(student, teacher.detach())


def feature_matching_loss(per_point: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``L_feat = sum_m mean((rho_m(g_A^m) - h_C^m)^2)``: the sum of the points' :func:`point_matching_loss`."""
    if not per_point:
        raise ValueError("feature_matching_loss needs at least one distillation point")
    return torch.stack(list(per_point.values())).sum()
