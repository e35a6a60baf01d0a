"""PKKDModule: a CNN teacher and its AdderNet student trained together (Xu et al., NeurIPS 2020).

The module wires the networks, the feature distiller (:mod:`pkkd_lightning.distill`), the optimiser and the
metrics. On every batch it trains the student with ``L_A = (1 - beta) CE + beta tau^2 KL + lambda L_feat``
(``docs/method.md``) and a jointly trained teacher with ``L_C = CE(z_C, y)``; ``mode`` selects each row of the
paper's table and its baselines.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from pkkd_lightning.distill import (
    Centering,
    FeatureSpace,
    KernelDistiller,
    LossWeightName,
    LossWeights,
    TransformInput,
)
from pkkd_lightning.distill.diagnostics import gradient_shares, kernel_statistics
from pkkd_lightning.distill.kernels import SigmaSpec
from pkkd_lightning.distill.objective import student_terms, teacher_terms
from pkkd_lightning.distill.taps import default_tap_paths
from pkkd_lightning.metrics import accuracy_metrics
from pkkd_lightning.models import InitScheme
from pkkd_lightning.models.specs import BUILTIN_MODELS
from pkkd_lightning.models.structure import check_distill_points, warn_unnormalized_adder_layers
from pkkd_lightning.modes import Mode, TeacherTraining, build_network, student_layer_type
from pkkd_lightning.network_io import load_network_weights
from pkkd_lightning.ops import rescale_adder_gradients
from pkkd_lightning.ops.backends import AdderBackendName, check_backend_name
from pkkd_lightning.optim import LrSchedule, sgd_with_schedule
from pkkd_lightning.rng import collect_rng_states, resume_rng_states
from pkkd_lightning.validation import check_choice, check_int, check_number


class PKKDModule(L.LightningModule):
    """Teacher CNN + student ANN of the same architecture, trained with PKKD (``docs/method.md``).

    Args:
        arch: the architecture of both twins: a built-in name (resnet20, resnet32, resnet56, vgg_small, resnet18,
            resnet50), ``timm:<name>`` for any timm model (``timm:resnet10t``, ``timm:mobilenetv3_small_050``),
            ``<module>:<function>`` for your own factory ``function(num_classes) -> nn.Module`` importable from the
            working directory, or a name registered with ``pkkd_lightning.models.register_model``.
        num_classes: number of classes (the CLI links it to the data module's).
        mode: ``cnn`` (a CNN alone), ``ann`` (a plain AdderNet), ``kd`` (AdderNet + logit distillation from a
            fixed teacher loaded from ``teacher_checkpoint``) or ``pkkd`` (the full method).
        init: ``official`` (the AdderNet code's initialisation) or ``kaiming``; see :mod:`pkkd_lightning.models.init`.
        distill_points: module paths of the distilled layers (shared by the twins; bias-free adder layers of
            the ANN); ``None`` = the last body layer of each stage (``layer<k>`` stages; for other networks the
            stages timm's ``feature_info`` reports, else the changes of resolution). Listed when fit starts.
        keep: further convolutions (module paths or glob patterns such as ``"*.se.*"``) that stay
            multiplication-based in the ANN, on top of AdderNet's stem and classifier.
        feature_weight: lambda, the weight of ``L_feat`` (a ``LossWeightSchedule`` may move it).
        beta: weight of the soft-logit term against cross-entropy, in [0, 1] (likewise).
        tau: softmax temperature of the soft-logit term, > 0 (likewise).
        feature_space: ``kernel`` (PKKD) or ``distance`` (ablation: match the scaled distances, no kernel).
        linear_transform: the training-only 1x1 transform on the ANN side (False: the "no transform" ablation).
        transform_input: what that transform reads: ``kernel`` (PKKD: the Laplace map; the transform starts as the
            identity) or ``standardized`` **[ours]** (the map standardised per channel with batch statistics; the
            transform starts at zero), see :class:`~pkkd_lightning.distill.distiller.KernelHead`.
        centering: ``none`` (PKKD) or ``channel`` **[ours]**: distances centred over channels before the kernels.
        teacher_training: ``joint`` trains the teacher with the student (PKKD's "progressive" teacher); ``fixed``
            loads it from ``teacher_checkpoint`` and freezes it (the "fixed pre-trained teacher" ablation).
        teacher_checkpoint: weights of a fixed teacher (a Lightning checkpoint of a ``cnn``-mode run, or an
            exported state dict); required by ``kd`` and by ``teacher_training="fixed"``.
        mutual_weight: weight of an optional ``tau^2 KL(p_A || p_C)`` term in the teacher's loss (0 = off).
        sigma_ann, sigma_cnn: kernel scales: ``"running_mean"`` or a fixed positive number.
        sigma_momentum: momentum of the running-mean sigma, in (0, 1].
        lr: initial SGD learning rate (both networks and the feature heads), > 0.
        momentum, nesterov, weight_decay: SGD settings.
        lr_schedule: ``cosine`` (per step, to zero over the run) or ``constant``.
        eta: AdderNet's adaptive learning-rate coefficient for every adder layer; ``None`` disables it.
        adder_backend: implementation of the adder layers (see :data:`pkkd_lightning.ops.BACKENDS`).
        grad_share_every_n_steps: every N training steps log the gradient shares of the student's loss terms at
            the distilled layers (``train/grad_share/<layer>/<term>``) and the kernel maps' statistics
            (``train/kernel/<layer>/<statistic>``); 0 = never. Each costs a backward pass per term.
    """

    def __init__(
        self,
        arch: str = "resnet20",
        num_classes: int = 10,
        mode: Mode = "pkkd",
        init: InitScheme = "official",
        distill_points: list[str] | None = None,
        keep: list[str] | None = None,
        feature_weight: float = 0.1,
        beta: float = 0.5,
        tau: float = 4.0,
        feature_space: FeatureSpace = "kernel",
        linear_transform: bool = True,
        transform_input: TransformInput = "kernel",
        centering: Centering = "none",
        teacher_training: TeacherTraining = "joint",
        teacher_checkpoint: str | None = None,
        mutual_weight: float = 0.0,
        sigma_ann: SigmaSpec = "running_mean",
        sigma_cnn: SigmaSpec = "running_mean",
        sigma_momentum: float = 0.1,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 5e-4,
        lr_schedule: LrSchedule = "cosine",
        eta: float | None = 0.2,
        adder_backend: AdderBackendName = "auto",
        grad_share_every_n_steps: int = 50,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_choice("model.mode", mode, Mode)
        check_choice("model.teacher_training", teacher_training, TeacherTraining)
        check_choice("model.lr_schedule", lr_schedule, LrSchedule)
        check_choice("model.transform_input", transform_input, TransformInput)
        if transform_input != "kernel" and not linear_transform:
            raise ValueError(
                f"model.transform_input={transform_input!r} sets what the 1x1 transform reads, but "
                "model.linear_transform is false: set model.linear_transform true or model.transform_input kernel"
            )
        check_backend_name(adder_backend, "model.adder_backend")
        check_int("model.num_classes", num_classes, 2)
        check_int("model.grad_share_every_n_steps", grad_share_every_n_steps, 0)
        check_number("model.lr", lr, low=0.0, low_open=True)
        check_number("model.momentum", momentum, low=0.0, high=1.0)
        check_number("model.weight_decay", weight_decay, low=0.0)
        check_number("model.mutual_weight", mutual_weight, low=0.0)
        check_number("model.eta", eta, low=0.0, low_open=True, optional=True)
        check_number("model.sigma_momentum", sigma_momentum, low=0.0, high=1.0, low_open=True)
        for key, sigma in (("model.sigma_ann", sigma_ann), ("model.sigma_cnn", sigma_cnn)):
            if sigma != "running_mean":
                check_number(key, sigma, low=0.0, low_open=True)
        self.loss_weights = LossWeights(beta=beta, feature_weight=feature_weight, tau=tau)
        self.has_teacher = mode in ("kd", "pkkd")
        self.teacher_trainable = mode == "pkkd" and teacher_training == "joint"
        if self.has_teacher and not self.teacher_trainable and teacher_checkpoint is None:
            raise ValueError(f"model.mode={mode!r} with a fixed teacher needs model.teacher_checkpoint (a cnn run)")

        layer_type = student_layer_type(mode)
        adder_kwargs = {"eta": eta, "backend": adder_backend} if layer_type == "adder" else None
        self.student = build_network(arch, layer_type, num_classes, init, adder_kwargs, keep)
        if layer_type == "adder" and arch not in BUILTIN_MODELS:
            warn_unnormalized_adder_layers(self.student, arch)
        self.teacher = build_network(arch, "conv", num_classes, init) if self.has_teacher else None
        if self.teacher is not None and not self.teacher_trainable:
            load_network_weights(self.teacher, teacher_checkpoint, f"arch={arch}, num_classes={num_classes}")
            self.teacher.requires_grad_(False)
            self.teacher.eval()
        self.distiller = None
        if mode == "pkkd":
            points = distill_points or default_tap_paths(self.student)
            check_distill_points(self.student, points)
            self.distiller = KernelDistiller(
                self.student, self.teacher, points, feature_space, linear_transform,
                sigma_ann, sigma_cnn, sigma_momentum, centering, transform_input,
            )  # fmt: skip
        self.metrics = nn.ModuleDict(
            {f"{stage}_{net}": accuracy_metrics(num_classes) for stage in ("val", "test") for net in self.networks()}
        )

    def networks(self) -> list[str]:
        """The trained/evaluated networks: ``["student"]`` or ``["student", "teacher"]``."""
        return ["student", "teacher"] if self.has_teacher else ["student"]

    def set_loss_weight(self, name: LossWeightName, value: float) -> None:
        """Set ``beta``, ``feature_weight`` or ``tau`` for the following steps (validated; schedules use this)."""
        check_choice("name", name, LossWeightName)
        self.loss_weights = replace(self.loss_weights, **{name: float(value)})

    def train(self, mode: bool = True) -> PKKDModule:
        super().train(mode)
        if self.teacher is not None and not self.teacher_trainable:
            self.teacher.eval()  # a fixed teacher keeps its BatchNorm statistics, whatever Lightning switches
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Student logits (what the exported model computes)."""
        return self.student(x)

    def compute_losses(self, x: torch.Tensor, y: torch.Tensor, kernel_stats: bool = False) -> dict[str, torch.Tensor]:
        """Every loss term for one batch; ``loss`` is the sum that is back-propagated.

        ``student/<part>`` are the weighted parts of ``L_A`` (``labels``, ``soft_logits``, ``features``) and sum to
        ``student``; ``feature/<point>`` are the distillation points' unweighted matching losses. With
        ``kernel_stats`` (and a distiller), ``kernel/<point>/<statistic>`` adds the detached
        :func:`~pkkd_lightning.distill.diagnostics.kernel_statistics` of every point.
        """
        point_losses, kernel_terms = {}, {}
        if self.distiller is not None:
            out = self.distiller(x, train_teacher=self.teacher_trainable, return_features=kernel_stats)
            z_student, z_teacher, point_losses = out.student_logits, out.teacher_logits, out.losses
            for point, features in (out.features or {}).items():
                kernel_terms.update({f"kernel/{point}/{k}": v for k, v in kernel_statistics(features).items()})
        else:
            z_student, z_teacher = self.student(x), None
            if self.teacher is not None:
                with torch.no_grad():
                    z_teacher = self.teacher(x)
        terms = student_terms(z_student, z_teacher, y, point_losses, self.loss_weights) | kernel_terms
        terms["loss"] = terms["student"]
        if self.teacher_trainable:
            terms.update(teacher_terms(z_teacher, z_student, y, self.loss_weights.tau, self.hparams.mutual_weight))
            terms["loss"] = terms["student"] + terms["teacher"]
        return terms

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        """The summed loss, and the names of any non-finite terms (``DivergenceGuard`` stops the run on them)."""
        every = self.hparams.grad_share_every_n_steps
        diagnose = bool(self.distiller is not None and every and self.global_step % every == 0)
        terms = self.compute_losses(*batch, kernel_stats=diagnose)
        logged = {k: v for k, v in terms.items() if k != "loss" and not k.startswith("kernel/")}
        self.log_dict({f"train/{k}": v.detach() for k, v in logged.items()})
        self.log("train/loss", terms["loss"].detach(), prog_bar=True)
        self.log_dict({f"train/{k}": float(v) for k, v in asdict(self.loss_weights).items()})
        if diagnose:
            self._log_diagnostics(terms)
        finite = bool(torch.isfinite(terms["loss"]))  # every term reaches the sum (a NaN survives a weight of 0)
        non_finite = [] if finite else [name for name, value in terms.items() if not torch.isfinite(value)]
        return {"loss": terms["loss"], "non_finite_terms": non_finite}

    def _log_diagnostics(self, terms: dict[str, torch.Tensor]) -> None:
        """The gradient shares of the student's terms at the distilled layers, and the kernel statistics."""
        parts = {k.split("/", 1)[1]: v for k, v in terms.items() if k.startswith("student/")}
        layers = {path: self.student.get_submodule(path).weight for path in self.distiller.points}
        shares = gradient_shares(parts, layers)
        shares = {f"train/grad_share/{p}/{t}": v for p, row in shares.items() for t, v in row.items()}
        self.log_at_this_step(shares | {f"train/{k}": v for k, v in terms.items() if k.startswith("kernel/")})

    def log_at_this_step(self, metrics: dict[str, torch.Tensor | float]) -> None:
        """Write ``metrics`` once, at this global step, to every logger: for values computed on some steps only.

        ``self.log`` would keep them among the step's results and write them again at every
        ``log_every_n_steps`` until the epoch ends, each time under a later step. The values are this process's
        (loggers write on rank zero only; nothing here is collective), as ``self.log`` without ``sync_dist`` gives.
        """
        values = {name: float(value) for name, value in metrics.items()}
        for logger in self.loggers:
            logger.log_metrics({**values, "epoch": self.current_epoch}, step=self.global_step)

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
        confidence, label = self.student(x).softmax(dim=1).max(dim=1)
        out = {"prediction": label, "confidence": confidence}
        if isinstance(batch, (list, tuple)) and len(batch) > 1:
            out["target"] = batch[1]
        return out

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = [{"name": "student", "params": list(self.student.parameters())}]
        if self.teacher_trainable:
            groups.append({"name": "teacher", "params": list(self.teacher.parameters())})
        head_params = list(self.distiller.parameters()) if self.distiller is not None else []
        if head_params:
            groups.append({"name": "feature heads (training only)", "params": head_params})
        total = 0
        if hp.lr_schedule == "cosine":
            steps = self.trainer.estimated_stepping_batches
            if not math.isfinite(steps):
                raise ValueError(
                    "model.lr_schedule=cosine decays the learning rate to zero over the run and needs its length, but "
                    "the trainer has none (max_epochs=-1 and no max_steps): set trainer.max_epochs or "
                    "trainer.max_steps, or use model.lr_schedule=constant"
                )
            total = int(steps)
        return sgd_with_schedule(groups, hp.lr, hp.momentum, hp.nesterov, hp.weight_decay, hp.lr_schedule, total)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning does not save random-number generator states; anything drawing random numbers in training
        # (the data does not: it is seeded per epoch and sample) continues after a resume as without the stop.
        checkpoint["rng_states"] = collect_rng_states()
        # The class names, where the data module knows them: the CLI refuses to test the checkpoint on other data.
        if classes := list(getattr(getattr(self._trainer, "datamodule", None), "classes", None) or []):
            checkpoint["data_classes"] = classes

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_rng_states = checkpoint.get("rng_states")

    def on_fit_start(self) -> None:
        if self.distiller is not None:
            rank_zero_info(
                f"PKKD distillation points ({len(self.distiller.points)}): {', '.join(self.distiller.points)}"
            )

    def on_train_start(self) -> None:
        if getattr(self, "_resumed_rng_states", None) is not None:
            resume_rng_states(self._resumed_rng_states)
            self._resumed_rng_states = None
        self._check_schedule_length()

    def _check_schedule_length(self) -> None:
        """Refuse a resume whose run length differs from the checkpoint's cosine schedule: the restored schedule
        keeps its own length, so the learning rate would climb back from zero (a restart) without notice."""
        scheduler = self.lr_schedulers()
        if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            return
        steps = self.trainer.estimated_stepping_batches
        if math.isfinite(steps) and scheduler.T_max != max(1, int(steps)):
            raise ValueError(
                f"this fit runs {int(steps)} optimisation steps, but the checkpoint it resumes decays its cosine "
                f"learning rate over {scheduler.T_max}: a resume continues a run with the length it was started "
                "with. Resume with the original trainer.max_epochs/max_steps, or train longer as a new run from its "
                "weights (--warm_start <checkpoint>)"
            )

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The plain ANN's weights: loadable into ``build_model(arch, "adder", num_classes)``."""
        return {k: v.detach().cpu().clone() for k, v in self.student.state_dict().items()}
