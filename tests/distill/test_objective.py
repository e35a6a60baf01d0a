"""The named loss terms of the student and the teacher, against hand-computed blends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pkkd_lightning.distill.losses import LossWeights, soft_logit_loss
from pkkd_lightning.distill.objective import student_terms, teacher_terms


@pytest.fixture
def logits():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen), torch.tensor([0, 1, 2, 3, 0])


def test_without_a_teacher_the_student_loss_is_the_cross_entropy(logits):
    z_s, _, y = logits
    terms = student_terms(z_s, None, y, {}, LossWeights(beta=0.7))
    assert set(terms) == {"student_ce", "student/labels", "student"}
    torch.testing.assert_close(terms["student"], F.cross_entropy(z_s, y))


def test_the_blend_of_labels_soft_logits_and_features(logits):
    z_s, z_t, y = logits
    points = {"a": torch.tensor(0.5), "b": torch.tensor(0.25)}
    terms = student_terms(z_s, z_t, y, points, LossWeights(beta=0.25, feature_weight=2.0, tau=3.0))
    ce, soft = F.cross_entropy(z_s, y), soft_logit_loss(z_s, z_t, 3.0)
    torch.testing.assert_close(terms["student"], 0.75 * ce + 0.25 * soft + 2.0 * 0.75)
    assert terms["feature/a"].item() == 0.5 and terms["feature"].item() == 0.75


def test_the_teacher_term_and_its_optional_mutual_part(logits):
    z_s, z_t, y = logits
    plain = teacher_terms(z_t, z_s, y, 4.0, 0.0)
    assert set(plain) == {"teacher_ce", "teacher"}
    mutual = teacher_terms(z_t, z_s, y, 4.0, 0.5)
    torch.testing.assert_close(mutual["teacher"], F.cross_entropy(z_t, y) + 0.5 * soft_logit_loss(z_t, z_s, 4.0))
