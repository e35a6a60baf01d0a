"""Analysis of a PKKD run: weight and feature distributions of the ANN and its CNN teacher, training curves.

PKKD (Xu et al., NeurIPS 2020, sec. 3) rests on two observations that this module makes measurable:

* ANN weights tend to a Laplace distribution and CNN weights to a Gaussian: :func:`fit_laplace`,
  :func:`fit_gaussian` and :func:`compare_weight_fits` fit both families by maximum likelihood per layer.
* The raw outputs of an adder layer (``-||x - f||_1``) and of a conv (``x.f``) differ in scale and shape, so PKKD
  matches them after a kernel (Laplace on the ANN side, then the 1x1 transform rho; Gaussian on the CNN side):
  :func:`collect_features` captures all four at the distillation points and :func:`feature_distance_table`
  compares student and teacher with the MMD (:func:`mmd_rbf`) before and after the kernels;
  :func:`kernel_channel_shares` measures how much of the kernel maps tells the channels apart, and
  :func:`best_transform` with :func:`explained_share` how much of the teacher's map any 1x1 transform of the
  student's could reproduce (:func:`with_kernel_centering`: the same with centred maps).

:func:`load_module`, :func:`load_datamodule` and :func:`read_metrics_csv` read a run back from its checkpoint and
its ``metrics.csv``. Everything returns tensors, dataclasses or plain rows; plotting is left to the notebook
``notebooks/feature_distributions.ipynb``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypedDict

import lightning as L
import torch
import torch.nn as nn

import pkkd_lightning.data  # noqa: F401  (checkpoints may only name data module classes that are imported)
from pkkd_lightning.distill.kernels import RunningScale
from pkkd_lightning.module import PKKDModule
from pkkd_lightning.ops import Adder2d


@dataclass
class FeatureSet:
    """Flattened samples of one distillation point; index ``i`` of all four is the same (image, channel, pixel).

    Attributes:
        student_raw: the adder output ``Y_A = -||x - f||_1``.
        teacher_raw: the conv output ``Y_C = x.f``.
        student_kernel: ``rho(exp(Y_A / sigma_a))``, the ANN side of ``L_feat`` (Laplace kernel, then transform).
        teacher_kernel: ``exp(-||x - f||_2^2 / (2 sigma_c^2))``, the CNN side of ``L_feat`` (Gaussian kernel).
    """

    student_raw: torch.Tensor
    teacher_raw: torch.Tensor
    student_kernel: torch.Tensor
    teacher_kernel: torch.Tensor


def collect_features(
    module: PKKDModule,
    loader: Iterable[Any],
    max_batches: int | None = None,
    max_samples: int | None = 20_000,
    seed: int = 0,
) -> dict[str, FeatureSet]:
    """Run student and teacher in eval mode over ``loader`` and sample their features at the distillation points.

    The module's own distiller computes the kernel features (``return_features=True``), in eval mode so the
    running sigmas stay frozen; the module's train/eval state is restored afterwards. Sampling keeps the
    ``max_samples`` positions with the smallest uniform random keys seen so far (a uniform sample without
    replacement over all batches, in bounded memory), the same positions for all four tensors.

    Args:
        module: a ``pkkd``-mode module.
        loader: batches ``(x, y)`` or ``x``.
        max_batches: stop after this many batches; ``None`` runs the whole loader.
        max_samples: positions kept per distillation point; ``None`` keeps every position.
        seed: seed of the sampling.

    Returns:
        ``{path: FeatureSet}`` in the order of ``module.distiller.points``, 1-D float32 CPU tensors.
    """
    if module.distiller is None:
        raise ValueError(f"collect_features needs a module with mode='pkkd', got mode={module.hparams.mode!r}")
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be a positive int or None, got {max_samples}")
    generator = torch.Generator().manual_seed(seed)
    kept: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # path -> (keys (n,), values (4, n))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for index, batch in enumerate(loader):
                if max_batches is not None and index >= max_batches:
                    break
                x = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(module.device)
                features = module.distiller(x, train_teacher=False, return_features=True).features
                for path, f in features.items():
                    values = torch.stack([f.student_raw, f.teacher_raw, f.student, f.teacher])
                    values = values.flatten(1).float().cpu()
                    keys = torch.rand(values.shape[1], generator=generator)
                    if path in kept:
                        keys, values = torch.cat([kept[path][0], keys]), torch.cat([kept[path][1], values], 1)
                    if max_samples is not None and keys.numel() > max_samples:
                        keys, order = keys.topk(max_samples, largest=False)
                        values = values[:, order]
                    kept[path] = keys, values
    finally:
        module.train(was_training)
    if not kept:
        raise ValueError("collect_features: the loader gave no batches")
    return {path: FeatureSet(*kept[path][1].unbind(0)) for path in module.distiller.points}


class ChannelShareRow(TypedDict):
    """One distillation point of :func:`kernel_channel_shares`."""

    layer: str
    student: float
    teacher: float


def channel_share(maps: torch.Tensor) -> float:
    """``std(m - mean_c m) / std(m)`` of (N, C, H, W) maps: the part of their variation that tells channels apart.

    0 when every channel holds the same map (the value depends on the image and the position only), about 1 when
    the channels vary independently of each other.
    """
    maps = maps.double()
    return ((maps - maps.mean(dim=1, keepdim=True)).std() / maps.std().clamp_min(1e-300)).item()


class KernelMaps(NamedTuple):
    """One distillation point's kernel maps pooled over batches, each (N, C, H, W): the student's Laplace map
    before the 1x1 transform and after it, and the teacher's Gaussian map."""

    student_untransformed: torch.Tensor
    student: torch.Tensor
    teacher: torch.Tensor


def kernel_maps(module: PKKDModule, loader: Iterable[Any], max_batches: int = 4) -> dict[str, KernelMaps]:
    """The kernel maps of every distillation point, in eval mode, the first ``max_batches`` batches pooled."""
    if module.distiller is None:
        raise ValueError(f"kernel maps need a module with mode='pkkd', got mode={module.hparams.mode!r}")
    pooled: dict[str, list[list[torch.Tensor]]] = {path: [[], [], []] for path in module.distiller.points}
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for index, batch in enumerate(loader):
                if index >= max_batches:
                    break
                x = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(module.device)
                for path, f in module.distiller(x, train_teacher=False, return_features=True).features.items():
                    for kept, tensor in zip(pooled[path], (f.student_before_transform, f.student, f.teacher)):
                        kept.append(tensor.cpu())
    finally:
        module.train(was_training)
    return {path: KernelMaps(*(torch.cat(kept) for kept in maps)) for path, maps in pooled.items()}


def kernel_channel_shares(module: PKKDModule, loader: Iterable[Any], max_batches: int = 4) -> list[ChannelShareRow]:
    """:func:`channel_share` of the student's (transformed) and the teacher's kernel maps at every distillation
    point (eval mode, the first ``max_batches`` batches pooled).

    The Gaussian kernel of a convolution, ``exp(-(||x||^2 + ||f||^2 - 2 x.f) / 2 sigma^2)``, carries the patch
    energy ``||x||^2``, which is the same for every filter; when it dominates, the teacher's map is nearly the
    same in every channel and ``L_feat`` mostly asks the student to reproduce the patch energy.
    """
    return [
        ChannelShareRow(layer=path, student=channel_share(maps.student), teacher=channel_share(maps.teacher))
        for path, maps in kernel_maps(module, loader, max_batches).items()
    ]


def explained_share(prediction: torch.Tensor, teacher: torch.Tensor) -> float:
    """``R^2 = 1 - sum (T - P)^2 / sum (T - mean_c T)^2`` of (N, C, H, W) maps, sums over every element, ``mean_c``
    each channel's mean over images and positions: the part of the teacher map's variation around its channel
    means that ``prediction`` reproduces (float64)."""
    teacher, prediction = teacher.double(), prediction.double()
    spread = (teacher - teacher.mean(dim=(0, 2, 3), keepdim=True)).square().sum()
    return (1 - (teacher - prediction).square().sum() / spread.clamp_min(1e-300)).item()


def best_transform(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The least-squares prediction of the (N, C_t, H, W) teacher map by a 1x1 affine transform of the
    (N, C_s, H, W) student map, ``argmin_{W, b} sum (T - (W S + b))^2`` over every image and position (float64):
    the best that PKKD's training-only transform rho (with a bias) could do with these student maps."""

    def rows(maps: torch.Tensor) -> torch.Tensor:  # (N * H * W, C)
        return maps.double().movedim(1, -1).reshape(-1, maps.shape[1])

    design = torch.cat([rows(student), torch.ones(rows(student).shape[0], 1, dtype=torch.float64)], dim=1)
    target = rows(teacher)
    fitted = design @ torch.linalg.lstsq(design, target).solution
    n, _, h, w = teacher.shape
    return fitted.reshape(n, h, w, -1).movedim(-1, 1)


def with_kernel_centering(module: PKKDModule, centering: str, x: torch.Tensor) -> PKKDModule:
    """A copy of a PKKD module with the same weights whose kernels centre the distances as ``centering``
    (``model.centering``), their running scales set from the batch ``x`` as the first training step sets them."""
    other = PKKDModule(**{**module.hparams, "centering": centering})
    other.load_state_dict(module.state_dict())
    scales = [m for m in other.modules() if isinstance(m, RunningScale) and m.adaptive]
    other.eval()
    with torch.no_grad():
        for scale in scales:
            scale.initialized.fill_(False)
            scale.train()
        other.distiller(x.to(next(module.parameters()).device), train_teacher=False)
    return other.eval()


@dataclass(frozen=True)
class DistributionFit:
    """A maximum-likelihood fit of a location-scale family to 1-D samples.

    Attributes:
        family: ``laplace`` (``loc`` = mu, ``scale`` = b) or ``gaussian`` (``loc`` = mu, ``scale`` = sigma).
        loc: location.
        scale: scale.
        mean_log_likelihood: ``(1/n) sum_i log p(x_i)`` on the fitted samples.
    """

    family: Literal["laplace", "gaussian"]
    loc: float
    scale: float
    mean_log_likelihood: float

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``-log(2b) - |x - mu| / b`` (Laplace) or ``-log(2 pi sigma^2) / 2 - (x - mu)^2 / (2 sigma^2)`` (Gaussian)."""
        z = (x.double() - self.loc) / self.scale
        if self.family == "laplace":
            return -math.log(2 * self.scale) - z.abs()
        return -0.5 * math.log(2 * math.pi * self.scale**2) - 0.5 * z.square()


def _fit(family: Literal["laplace", "gaussian"], x: torch.Tensor) -> DistributionFit:
    x = x.detach().flatten().double().cpu()
    if x.numel() < 2:
        raise ValueError(f"cannot fit a {family} distribution to {x.numel()} sample(s); need at least 2")
    loc = x.median() if family == "laplace" else x.mean()
    scale = (x - loc).abs().mean() if family == "laplace" else x.std(correction=0)
    if not scale > 0:
        raise ValueError(f"cannot fit a {family} distribution: the samples have zero spread")
    fit = DistributionFit(family, loc.item(), scale.item(), math.nan)
    return replace(fit, mean_log_likelihood=fit.log_prob(x).mean().item())


def fit_laplace(x: torch.Tensor) -> DistributionFit:
    """Laplace MLE: ``mu = median(x)``, ``b = mean |x - mu|``; mean log-likelihood ``-log(2b) - 1``."""
    return _fit("laplace", x)


def fit_gaussian(x: torch.Tensor) -> DistributionFit:
    """Gaussian MLE: ``mu = mean(x)``, ``sigma^2 = mean (x - mu)^2``; mean log-likelihood ``-log(2 pi e sigma^2)/2``."""
    return _fit("gaussian", x)


class WeightFitRow(TypedDict):
    """One layer of :func:`compare_weight_fits`."""

    layer: str
    kind: Literal["adder", "conv"]
    numel: int
    laplace_ll: float
    gaussian_ll: float
    better: Literal["laplace", "gaussian"]


def compare_weight_fits(model: nn.Module) -> list[WeightFitRow]:
    """Fit Laplace and Gaussian to the weights of every conv and adder layer of ``model``.

    Both families have two parameters, so the higher mean log-likelihood is also the lower AIC/BIC.

    Returns:
        One row per ``nn.Conv2d`` (``Adder2d`` included), in ``named_modules`` order.
    """
    rows: list[WeightFitRow] = []
    for name, layer in model.named_modules():
        if not isinstance(layer, nn.Conv2d):
            continue
        laplace, gaussian = fit_laplace(layer.weight), fit_gaussian(layer.weight)
        rows.append(
            WeightFitRow(
                layer=name,
                kind="adder" if isinstance(layer, Adder2d) else "conv",
                numel=layer.weight.numel(),
                laplace_ll=laplace.mean_log_likelihood,
                gaussian_ll=gaussian.mean_log_likelihood,
                better="laplace" if laplace.mean_log_likelihood > gaussian.mean_log_likelihood else "gaussian",
            )
        )
    return rows


def standardize(x: torch.Tensor) -> torch.Tensor:
    """``(x - mean(x)) / std(x)``: keeps the shape of a distribution, drops its location and scale."""
    x = x.double()
    return (x - x.mean()) / x.std(correction=0).clamp_min(torch.finfo(torch.float64).tiny)


def mmd_rbf(
    x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None, max_samples: int = 1000, seed: int = 0
) -> float:
    """Squared maximum mean discrepancy with an RBF kernel (biased V-statistic, Gretton et al., JMLR 2012).

    ``MMD^2 = mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j)`` with
    ``k(a, b) = exp(-||a - b||^2 / (2 h^2))``. The biased form is never negative and is exactly 0 for identical
    samples; its bias for two samples of one distribution is O(1/n).

    Args:
        x, y: samples, ``(n,)`` or ``(n, d)``.
        bandwidth: h; ``None`` uses the median heuristic (median pairwise distance of the pooled samples).
        max_samples: each side is subsampled (seeded) to at most this many rows: the cost is quadratic.
        seed: seed of the subsampling.

    Returns:
        The MMD^2 estimate.
    """
    x, y = (s.detach().double().cpu().reshape(s.shape[0], -1) for s in (x, y))
    if x.shape[0] < 1 or y.shape[0] < 1 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be non-empty samples of one dimension, got {tuple(x.shape)}, {tuple(y.shape)}")
    # One seed per side: samples of equal length keep the same rows (identical inputs give exactly 0).
    x, y = (s[torch.randperm(len(s), generator=torch.Generator().manual_seed(seed))[:max_samples]] for s in (x, y))
    if bandwidth is None:
        distances = torch.pdist(torch.cat([x, y]))
        if not distances.gt(0).any():
            return 0.0  # every pooled point is the same: the two samples are identical point masses
        bandwidth = distances.median().item() or distances.mean().item()  # the mean when most points tie
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive or None, got {bandwidth}")

    def mean_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(a, b).square() / (2 * bandwidth**2)).mean()

    return max(0.0, (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)).item())


class FeatureDistanceRow(TypedDict):
    """One distillation point of :func:`feature_distance_table`."""

    layer: str
    raw_mmd: float
    kernel_mmd_standardized: float
    kernel_mmd: float
    kernel_mse: float


def feature_distance_table(
    features: dict[str, FeatureSet], max_samples: int = 1000, seed: int = 0
) -> list[FeatureDistanceRow]:
    """Student-teacher distances per distillation point, before and after the kernels.

    Raw adder outputs are negative distances in the tens to hundreds while conv outputs are of order one, so the
    raw features are compared standardised (shape only): ``raw_mmd``. In kernel space both sides are compared as
    ``L_feat`` matches them (``kernel_mmd``) and standardised (``kernel_mmd_standardized``, the like-for-like
    comparison with ``raw_mmd``). ``kernel_mse`` is ``mean((rho(g_A) - h_C)^2)`` over the paired samples: the
    eval-mode estimate of this point's ``L_feat`` term.
    """

    def mmd(x: torch.Tensor, y: torch.Tensor) -> float:
        return mmd_rbf(x, y, None, max_samples, seed)

    return [
        FeatureDistanceRow(
            layer=path,
            raw_mmd=mmd(standardize(f.student_raw), standardize(f.teacher_raw)),
            kernel_mmd_standardized=mmd(standardize(f.student_kernel), standardize(f.teacher_kernel)),
            kernel_mmd=mmd(f.student_kernel, f.teacher_kernel),
            kernel_mse=(f.student_kernel - f.teacher_kernel).square().mean().item(),
        )
        for path, f in features.items()
    ]


def load_module(checkpoint_path: str | Path) -> PKKDModule:
    """A :class:`PKKDModule` from a Lightning checkpoint, on the CPU and in eval mode."""
    module = PKKDModule.load_from_checkpoint(checkpoint_path, map_location="cpu", weights_only=False)
    return module.eval()


def load_datamodule(checkpoint_path: str | Path) -> L.LightningDataModule:
    """The data module a run trained on, rebuilt from the hyper-parameters its checkpoint saved (the CLI's runs)."""
    return L.LightningDataModule.load_from_checkpoint(checkpoint_path, map_location="cpu", weights_only=False)


class MetricPoint(NamedTuple):
    """One logged value: global step, epoch (``None`` for rows Lightning logs without one) and value."""

    step: int
    epoch: int | None
    value: float


def read_metrics_csv(path: str | Path) -> dict[str, list[MetricPoint]]:
    """Lightning ``CSVLogger``'s ``metrics.csv`` as ``{metric: [MetricPoint, ...]}`` in file order, empty cells skipped.

    Lightning writes one row per logging call with blanks for the metrics it did not log (``val/*`` at epoch ends,
    ``train/*`` every ``log_every_n_steps``), so each metric keeps only its own rows.
    """
    series: dict[str, list[MetricPoint]] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "step" not in reader.fieldnames:
            raise ValueError(f"{path} is not a Lightning metrics.csv: no 'step' column in {reader.fieldnames}")
        for row in reader:
            step = int(row["step"])
            epoch = int(row["epoch"]) if row.get("epoch") else None
            for name, cell in row.items():
                if name not in ("step", "epoch") and cell:
                    series.setdefault(name, []).append(MetricPoint(step, epoch, float(cell)))
    return series


def read_run_metrics(log_root: str | Path) -> dict[str, list[MetricPoint]]:
    """The metrics of one run from every ``version_*/metrics.csv`` under ``log_root`` (a resumed run logs into a new
    version folder), as one :func:`read_metrics_csv` series: in version order, each file's points replace the
    earlier files' points from its own first step on (what was logged after the checkpoint it resumed from)."""
    files = sorted(Path(log_root).glob("version_*/metrics.csv"), key=lambda f: int(f.parent.name.split("_")[1]))
    series: dict[str, list[MetricPoint]] = {}
    for path in files:
        later = read_metrics_csv(path)
        first = min((point.step for points in later.values() for point in points), default=None)
        if first is None:
            continue
        series = {name: [p for p in points if p.step < first] for name, points in series.items()}
        for name, points in later.items():
            series.setdefault(name, []).extend(points)
    return {name: points for name, points in series.items() if points}
