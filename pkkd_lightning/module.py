"""PKKDModule: a CNN teacher and its AdderNet student trained together (Xu et al., NeurIPS 2020).

One LightningModule holds the pair and, on every batch, trains

* the student ANN with ``L_A = (1 - beta) CE(z_A, y) + beta tau^2 KL(p_C^tau || p_A^tau) + lambda L_feat``,
  where ``L_feat`` matches the ANN's Laplace-kernel features (after a training-only 1x1 transform) to the CNN's
  Gaussian-kernel features at the distillation points (:mod:`pkkd_lightning.distill`);
* the teacher CNN with ``L_C = CE(z_C, y)`` (plus an optional mutual term from the student), so the student
  always learns from a teacher at a similar stage of training: the "progressive" part.

``mode`` selects each row of the paper's table and its baselines; the ablation switches remove one piece each.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from pkkd_lightning.distill.kernels import GaussianKernel, LaplaceKernel, SigmaSpec
from pkkd_lightning.distill.losses import blended_student_loss, feature_matching_loss, soft_logit_loss
from pkkd_lightning.distill.taps import FeatureTaps, default_tap_paths
from pkkd_lightning.models import build_model
from pkkd_lightning.network_io import load_network_weights
from pkkd_lightning.ops import Adder2d, rescale_adder_gradients
from pkkd_lightning.rng import collect_rng_states, resume_rng_states

Mode = Literal["cnn", "ann", "kd", "pkkd"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the term."""


class PKKDModule(L.LightningModule):
    """Teacher CNN + student ANN of the same architecture, trained with PKKD.

    Args:
        arch: model name from :func:`pkkd_lightning.models.list_models`.
        num_classes: number of classes.
        mode: ``cnn`` (a CNN alone), ``ann`` (a plain AdderNet), ``kd`` (AdderNet + logit distillation from a
            fixed teacher loaded from ``teacher_checkpoint``) or ``pkkd`` (the full method).
        distill_points: module paths of the distilled layers (shared by the twins); ``None`` = the last body
            layer of each stage.
        feature_weight: lambda, the weight of ``L_feat`` (moved over training by ``ProgressiveSchedule``).
        beta: weight of the soft-logit term against cross-entropy (likewise scheduled).
        tau: softmax temperature of the soft-logit term.
        use_kernel: ablation switch; False matches scaled raw distances instead of kernel values.
        use_linear_transform: ablation switch; False drops the training-only 1x1 transform on the ANN side.
        progressive: True trains the teacher jointly; False loads it from ``teacher_checkpoint`` and freezes it
            (the "fixed pre-trained teacher" ablation).
        teacher_checkpoint: weights of a fixed teacher (a Lightning checkpoint of a ``cnn``-mode run, or an
            exported state dict); required by ``kd`` and by ``pkkd`` with ``progressive=False``.
        mutual_weight: weight of an optional ``tau^2 KL(p_A || p_C)`` term in the teacher's loss (0 = off).
        sigma_ann, sigma_cnn: kernel scales: ``"running_mean"`` or a fixed positive number
            (:mod:`pkkd_lightning.distill.kernels`).
        sigma_momentum: momentum of the running-mean sigma.
        lr: initial SGD learning rate (both networks and the transforms).
        momentum, nesterov, weight_decay: SGD settings.
        lr_schedule: ``cosine`` (per step, to zero over the run) or ``constant``.
        eta: AdderNet's adaptive learning-rate coefficient for every adder layer; ``None`` disables it.
        adder_backend: implementation of the adder layers (see :data:`pkkd_lightning.ops.BACKENDS`).
    """

    def __init__(
        self,
        arch: str = "resnet20",
        num_classes: int = 10,
        mode: Mode = "pkkd",
        distill_points: list[str] | None = None,
        feature_weight: float = 1.0,
        beta: float = 0.5,
        tau: float = 4.0,
        use_kernel: bool = True,
        use_linear_transform: bool = True,
        progressive: bool = True,
        teacher_checkpoint: str | None = None,
        mutual_weight: float = 0.0,
        sigma_ann: SigmaSpec = "running_mean",
        sigma_cnn: SigmaSpec = "running_mean",
        sigma_momentum: float = 0.1,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 5e-4,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        eta: float | None = 0.2,
        adder_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _check_choice("mode", mode, ("cnn", "ann", "kd", "pkkd"))
        _check_choice("lr_schedule", lr_schedule, ("cosine", "constant"))
        self.has_teacher = mode in ("kd", "pkkd")
        self.teacher_trainable = mode == "pkkd" and progressive
        if self.has_teacher and not self.teacher_trainable and teacher_checkpoint is None:
            raise ValueError(f"mode={mode!r} with a fixed teacher needs teacher_checkpoint (a cnn-mode run's weights)")
        self.beta, self.feature_weight, self.tau = beta, feature_weight, tau

        student_type = "conv" if mode == "cnn" else "adder"
        adder_kwargs = {"eta": eta, "backend": adder_backend} if student_type == "adder" else None
        self.student = build_model(arch, student_type, num_classes, adder_kwargs=adder_kwargs)
        self.teacher = build_model(arch, "conv", num_classes) if self.has_teacher else None
        if self.teacher is not None and not self.teacher_trainable:
            load_network_weights(self.teacher, teacher_checkpoint)
            self.teacher.requires_grad_(False)
            self.teacher.eval()

        self.distill_points = []
        if mode == "pkkd":
            self.distill_points = list(distill_points) if distill_points else default_tap_paths(self.student)
            self.student_taps = FeatureTaps(self.student, self.distill_points)
            self.teacher_taps = FeatureTaps(self.teacher, self.distill_points)
            self._build_feature_heads(sigma_ann, sigma_cnn, sigma_momentum, use_kernel, use_linear_transform)

        self.metrics = nn.ModuleDict(
            {f"{stage}_{net}": _accuracy_metrics(num_classes) for stage in ("val", "test") for net in self.networks()}
        )

    def networks(self) -> list[str]:
        """The trained/evaluated networks: ``["student"]`` or ``["student", "teacher"]``."""
        return ["student", "teacher"] if self.has_teacher else ["student"]

    def _build_feature_heads(
        self, sigma_ann: SigmaSpec, sigma_cnn: SigmaSpec, momentum: float, use_kernel: bool, use_transform: bool
    ) -> None:
        self.ann_kernels = nn.ModuleList(LaplaceKernel(sigma_ann, momentum, use_kernel) for _ in self.distill_points)
        self.cnn_kernels = nn.ModuleList(GaussianKernel(sigma_cnn, momentum, use_kernel) for _ in self.distill_points)
        transforms = []
        for path in self.distill_points:
            layer = self.student.get_submodule(path)
            if not isinstance(layer, Adder2d) or self.teacher.get_submodule(path).bias is not None:
                raise ValueError(f"distill point {path!r} must be an adder layer (ANN) and a bias-free conv (CNN)")
            transforms.append(_identity_1x1(layer.out_channels) if use_transform else nn.Identity())
        self.feature_transforms = nn.ModuleList(transforms)

    # ------------------------------------------------------------------ forward and losses
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Student logits (what the exported model computes)."""
        return self.student(x)

    def compute_losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every loss term for one batch; ``loss`` is the sum that is back-propagated."""
        if not self.distill_points:
            z_student = self.student(x)
            terms = {"student_ce": F.cross_entropy(z_student, y)}
            if self.has_teacher:
                with torch.no_grad():
                    z_teacher = self.teacher(x)
                terms["student_soft"] = soft_logit_loss(z_student, z_teacher, self.tau)
                no_feature = z_student.new_zeros(())
                terms["student"] = blended_student_loss(
                    terms["student_ce"], terms["student_soft"], no_feature, self.beta, feature_weight=0.0
                )
            else:
                terms["student"] = terms["student_ce"]
            terms["loss"] = terms["student"]
            return terms

        with self.student_taps:
            z_student = self.student(x)
        with self.teacher_taps, torch.set_grad_enabled(self.teacher_trainable and torch.is_grad_enabled()):
            z_teacher = self.teacher(x)
        student_records, teacher_records = self.student_taps.pop(), self.teacher_taps.pop()
        student_feats = [
            transform(kernel(student_records[path]))
            for path, kernel, transform in zip(self.distill_points, self.ann_kernels, self.feature_transforms)
        ]
        teacher_feats = [kernel(teacher_records[path]) for path, kernel in zip(self.distill_points, self.cnn_kernels)]
        terms = {
            "student_ce": F.cross_entropy(z_student, y),
            "student_soft": soft_logit_loss(z_student, z_teacher, self.tau),
            "feature": feature_matching_loss(student_feats, teacher_feats),
        }
        terms["student"] = blended_student_loss(
            terms["student_ce"], terms["student_soft"], terms["feature"], self.beta, self.feature_weight
        )
        terms["loss"] = terms["student"]
        if self.teacher_trainable:
            terms["teacher_ce"] = F.cross_entropy(z_teacher, y)
            terms["teacher"] = terms["teacher_ce"]
            if self.hparams.mutual_weight > 0:
                terms["teacher_mutual"] = soft_logit_loss(z_teacher, z_student, self.tau)
                terms["teacher"] = terms["teacher"] + self.hparams.mutual_weight * terms["teacher_mutual"]
            terms["loss"] = terms["loss"] + terms["teacher"]
        return terms

    # ------------------------------------------------------------------ Lightning hooks
    def train(self, mode: bool = True) -> PKKDModule:
        super().train(mode)
        if self.teacher is not None and not self.teacher_trainable:
            self.teacher.eval()  # a fixed teacher keeps its BatchNorm statistics, whatever Lightning switches
        return self

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        terms = self.compute_losses(x, y)
        for name, value in terms.items():
            if not torch.isfinite(value):
                raise NonFiniteLossError(
                    f"loss term '{name}' is {value.item()} at global step {self.global_step} (epoch "
                    f"{self.current_epoch}); the last saved checkpoint is untouched. Lower lr, or check sigma_*."
                )
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items() if k != "loss"})
        self.log("train/loss", terms["loss"].detach(), prog_bar=True)
        self.log_dict({"train/beta": float(self.beta), "train/feature_weight": float(self.feature_weight)})
        return terms["loss"]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # After DDP's all-reduce and gradient accumulation, before clipping and the step: AdderNet eq. 13 acts on
        # the gradient of the whole global batch (see pkkd_lightning.ops.adaptive_lr).
        rescale_adder_gradients(self.student)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        for net in self.networks():
            logits = getattr(self, net)(x)
            metrics = self.metrics[f"{stage}_{net}"]
            metrics.update(logits, y)
            self.log(f"{stage}/{net}_loss", F.cross_entropy(logits, y), sync_dist=True)
            self.log_dict({f"{stage}/{net}_{k}": m for k, m in metrics.items()}, prog_bar=net == "student")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        probs = self.student(x).softmax(dim=1)
        confidence, label = probs.max(dim=1)
        out = {"prediction": label, "confidence": confidence}
        if isinstance(batch, (list, tuple)) and len(batch) > 1:
            out["target"] = batch[1]
        return out

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = [{"name": "student", "params": list(self.student.parameters())}]
        if self.teacher_trainable:
            groups.append({"name": "teacher", "params": list(self.teacher.parameters())})
        if self.distill_points:
            transform_params = list(self.feature_transforms.parameters())
            if transform_params:
                groups.append({"name": "feature_transforms (training only)", "params": transform_params})
        optimizer = torch.optim.SGD(
            groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay
        )
        if hp.lr_schedule == "constant":
            return {"optimizer": optimizer}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning does not save random-number generator states; a resumed run needs them to draw the same
        # shuffles and augmentations as an uninterrupted one.
        checkpoint["rng_states"] = collect_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_rng_states = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        if getattr(self, "_resumed_rng_states", None) is not None:
            resume_rng_states(self._resumed_rng_states)
            self._resumed_rng_states = None

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The plain ANN's weights: loadable into ``build_model(arch, "adder", num_classes)``."""
        return {k: v.detach().cpu().clone() for k, v in self.student.state_dict().items()}


def cosine_factor(step: int, total: int) -> float:
    """Cosine learning-rate factor ``0.5 (1 + cos(pi step / total))``, from 1 at step 0 to 0 at ``total``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _identity_1x1(channels: int) -> nn.Conv2d:
    """The training-only linear transform rho: a 1x1 convolution initialised to the identity."""
    conv = nn.Conv2d(channels, channels, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        conv.bias.zero_()
    return conv


def _accuracy_metrics(num_classes: int) -> MetricCollection:
    metrics = {"acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes >= 5:
        metrics["acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)
