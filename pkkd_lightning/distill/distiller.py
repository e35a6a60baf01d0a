"""Feature distillers: run a student and a teacher, tap both at named layers, map the taps, return losses.

A :class:`FeatureDistiller` owns everything between the two networks and the feature loss: the forward hooks
(:class:`~pkkd_lightning.distill.taps.FeatureTaps`, one list of module paths for both twins, validated once), one
head per distillation point in a ``ModuleDict`` keyed by that path, and the per-point matching loss. The
networks stay the caller's (a LightningModule's ``student``/``teacher``): the distiller refers to them through
its taps and registers none of their parameters. A new feature-distillation method is a subclass that says how
to build a head; :class:`KernelDistiller` is PKKD's (Xu et al., NeurIPS 2020, sec. 3.2).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from pkkd_lightning.distill.kernels import Centering, GaussianKernel, LaplaceKernel, SigmaSpec
from pkkd_lightning.distill.losses import point_matching_loss
from pkkd_lightning.distill.taps import FeatureTaps, TapRecord
from pkkd_lightning.ops import Adder2d
from pkkd_lightning.validation import check_choice

#: What PKKD matches at a point: kernel values (the method), or the scaled distances (the "no kernel" ablation).
FeatureSpace = Literal["kernel", "distance"]
#: What the 1x1 transform rho reads: the Laplace map as it is (PKKD), or the map standardised per channel.
TransformInput = Literal["kernel", "standardized"]


@dataclass
class PointFeatures:
    """What a head made of one distillation point's taps.

    Attributes:
        student_raw: the student layer's output (for an adder layer ``Y_A = -||x - f||_1``).
        teacher_raw: the teacher layer's output (for a convolution ``Y_C = x.f``).
        student: the student side of the matching loss.
        teacher: the teacher side of the matching loss (the target; the loss detaches it).
        student_untransformed: the student side before a head's trainable map (PKKD's 1x1 transform); ``None``
            when the head has none, i.e. it equals ``student``.
    """

    student_raw: torch.Tensor
    teacher_raw: torch.Tensor
    student: torch.Tensor
    teacher: torch.Tensor
    student_untransformed: torch.Tensor | None = None

    @property
    def student_before_transform(self) -> torch.Tensor:
        """The student side before the head's trainable map: ``student_untransformed``, or ``student`` without one."""
        return self.student if self.student_untransformed is None else self.student_untransformed


@dataclass
class DistillerOutput:
    """One forward pass of a :class:`FeatureDistiller`.

    Attributes:
        student_logits: the student's output.
        teacher_logits: the teacher's output.
        losses: the matching loss of every distillation point, by module path.
        features: the heads' outputs by module path, when asked for (``return_features=True``).
    """

    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    losses: dict[str, torch.Tensor]
    features: dict[str, PointFeatures] | None = None


def head_key(path: str) -> str:
    """A ``ModuleDict`` key for a module path (keys cannot contain dots): ``layer1.2.conv2`` -> ``layer1:2:conv2``."""
    return path.replace(".", ":")


class FeatureDistiller(nn.Module, abc.ABC):
    """Distil ``teacher`` into ``student`` at the layers ``points`` (module paths shared by the twins).

    Subclasses implement :meth:`build_head`: a module mapping the two :class:`TapRecord` s of one point to a
    :class:`PointFeatures`. The loss of a point is :func:`~pkkd_lightning.distill.losses.point_matching_loss`.

    Args:
        student: the network being trained.
        teacher: the network distilled from.
        points: module paths of the distilled layers, validated here (see ``FeatureTaps``).

    Raises:
        ValueError: no points, or a path that names no tappable layer of either network.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, points: Sequence[str]) -> None:
        super().__init__()
        if isinstance(points, str) or not points:
            raise ValueError(f"`distill_points` must be a non-empty list of module paths; got {points!r}")
        self.points = list(points)
        self.student_taps = FeatureTaps(student, self.points)
        self.teacher_taps = FeatureTaps(teacher, self.points)
        self.heads = nn.ModuleDict(
            {
                head_key(path): self.build_head(path, student.get_submodule(path), teacher.get_submodule(path))
                for path in self.points
            }
        )

    @abc.abstractmethod
    def build_head(self, path: str, student_layer: nn.Module, teacher_layer: nn.Module) -> nn.Module:
        """The head of one point: ``head(student_record, teacher_record) -> PointFeatures``."""

    def forward(self, x: torch.Tensor, train_teacher: bool, return_features: bool = False) -> DistillerOutput:
        """Run both networks on ``x`` with the taps on and compute every point's matching loss.

        Args:
            x: the input batch.
            train_teacher: build the teacher's autograd graph (a jointly trained teacher); False runs it without.
            return_features: also return every head's :class:`PointFeatures`.
        """
        student, teacher = self.student_taps.model, self.teacher_taps.model
        with self.student_taps:
            student_logits = student(x)
        with self.teacher_taps, torch.set_grad_enabled(train_teacher and torch.is_grad_enabled()):
            teacher_logits = teacher(x)
        student_records, teacher_records = self.student_taps.pop(), self.teacher_taps.pop()
        features = {
            path: self.heads[head_key(path)](student_records[path], teacher_records[path]) for path in self.points
        }
        losses = {path: point_matching_loss(f.student, f.teacher) for path, f in features.items()}
        return DistillerOutput(student_logits, teacher_logits, losses, features if return_features else None)


class KernelHead(nn.Module):
    """PKKD at one point: ``rho(g(Y_A))`` against ``h(x, f)`` (Laplace kernel, 1x1 transform; Gaussian kernel).

    Args:
        channels: output channels of the distilled layer.
        student_kernel: the ANN-side map (Laplace).
        teacher_kernel: the CNN-side map (Gaussian).
        linear_transform: add the training-only 1x1 convolution ``rho`` on the ANN side.
        transform_input: ``kernel``: ``rho`` reads the Laplace map and starts as the identity. ``standardized``
            **[ours]**: ``rho`` reads the map standardised per channel, ``(g - mean_c g) / std_c g`` (batch statistics
            in training; a ``BatchNorm2d`` without parameters) and starts at zero. Both are affine maps of ``g`` per
            position, the same family; the standardised one is trained at the same rate in every direction, where the
            Laplace map's small spread (about 0.06 around 0.4) leaves ``rho``'s weights nearly still under SGD.
    """

    def __init__(
        self,
        channels: int,
        student_kernel: nn.Module,
        teacher_kernel: nn.Module,
        linear_transform: bool,
        transform_input: TransformInput = "kernel",
    ) -> None:
        super().__init__()
        check_choice("transform_input", transform_input, TransformInput)
        self.student_kernel, self.teacher_kernel = student_kernel, teacher_kernel
        self.transform: nn.Module = nn.Identity()
        if linear_transform and transform_input == "standardized":
            self.transform = nn.Sequential(nn.BatchNorm2d(channels, affine=False), zero_1x1(channels))
        elif linear_transform:
            self.transform = identity_1x1(channels)

    def forward(self, student: TapRecord, teacher: TapRecord) -> PointFeatures:
        """The feature maps of this point, each of the layer's output shape."""
        student_kernel = self.student_kernel(student)
        return PointFeatures(
            student.output, teacher.output, self.transform(student_kernel), self.teacher_kernel(teacher), student_kernel
        )


def identity_1x1(channels: int) -> nn.Conv2d:
    """The training-only linear transform rho: a 1x1 convolution initialised to the identity (no random draw)."""
    conv = zero_1x1(channels)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
    return conv


def zero_1x1(channels: int) -> nn.Conv2d:
    """A 1x1 convolution with zero weights and bias (no random draw)."""
    conv = nn.utils.skip_init(nn.Conv2d, channels, channels, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
    return conv


class KernelDistiller(FeatureDistiller):
    """PKKD's kernel-based feature distillation from a CNN teacher into its AdderNet twin.

    At each point the ANN's adder output goes through a Laplace kernel and the training-only 1x1 transform, the
    CNN's convolution output through a Gaussian kernel, and the two maps are matched with a mean squared error
    (:mod:`pkkd_lightning.distill.kernels` has the formulas and the sigma policy).

    Args:
        student: the ANN.
        teacher: the CNN.
        points: module paths of adder layers in the student whose teacher twins are bias-free convolutions.
        feature_space: ``kernel`` (PKKD) or ``distance`` (the ablation matching scaled distances, no kernel).
        linear_transform: use the 1x1 transform (False: the "no transform" ablation).
        transform_input: what the transform reads, ``kernel`` (PKKD) or ``standardized`` **[ours]** (see
            :class:`KernelHead`).
        sigma_ann, sigma_cnn: kernel scales, ``"running_mean"`` or a fixed positive number.
        sigma_momentum: momentum of the running-mean scales.
        centering: ``none`` (PKKD) or ``channel`` **[ours]**: centre the distances over channels first.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        points: Sequence[str],
        feature_space: FeatureSpace = "kernel",
        linear_transform: bool = True,
        sigma_ann: SigmaSpec = "running_mean",
        sigma_cnn: SigmaSpec = "running_mean",
        sigma_momentum: float = 0.1,
        centering: Centering = "none",
        transform_input: TransformInput = "kernel",
    ) -> None:
        check_choice("feature_space", feature_space, FeatureSpace)
        self.transform_input = transform_input  # validated by each KernelHead
        self.kernel_kwargs = {
            "momentum": sigma_momentum,
            "apply_kernel": feature_space == "kernel",
            "centering": centering,
        }
        self.sigmas, self.linear_transform = (sigma_ann, sigma_cnn), linear_transform
        super().__init__(student, teacher, points)

    def build_head(self, path: str, student_layer: nn.Module, teacher_layer: nn.Module) -> KernelHead:
        """A :class:`KernelHead` for an adder layer and its bias-free convolution twin."""
        if not isinstance(student_layer, Adder2d) or isinstance(teacher_layer, Adder2d):
            raise ValueError(f"distill point {path!r} must be an adder layer in the ANN and a convolution in the CNN")
        if teacher_layer.bias is not None:
            raise ValueError(
                f"distill point {path!r}: the CNN's convolution has a bias; the Gaussian kernel needs none"
            )
        sigma_ann, sigma_cnn = self.sigmas
        return KernelHead(
            student_layer.out_channels,
            LaplaceKernel(sigma_ann, **self.kernel_kwargs),
            GaussianKernel(sigma_cnn, **self.kernel_kwargs),
            self.linear_transform,
            self.transform_input,
        )
