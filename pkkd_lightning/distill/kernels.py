"""Kernel maps of PKKD (Xu et al., NeurIPS 2020, sec. 3.2) and the sigma policy that keeps them finite.

The CNN and ANN features follow different distributions (Gaussian-like and Laplacian-like weights), so PKKD
matches them after a kernel, each side with its own:

* CNN, Gaussian kernel: ``h(x, f) = exp(-||x - f||_2^2 / (2 sigma_c^2))`` with
  ``||x - f||_2^2 = ||x||^2 + ||f||^2 - 2 x.f``: computed from the conv output ``x.f`` and the patch and filter
  squared norms captured by :class:`~pkkd_lightning.distill.taps.FeatureTaps`; no extra pass over patches.
* ANN, Laplace kernel: ``g(x, f) = exp(-||x - f||_1 / sigma_a) = exp(Y_A / sigma_a)``, from the adder output.

Sigma policy **[ours]** (the paper leaves the scale of the distances open, see ``docs/method.md``). Raw distances
are in the tens to hundreds, where ``exp(-d)`` underflows to 0 and gives no gradient. With ``sigma="running_mean"``
(the default) each kernel divides its distance by a running mean of that distance (exponential moving average over
training batches, all-reduced across data-parallel ranks so every replica uses the same value, frozen in eval mode):
the kernel value is then ``exp(-d / mean(d))``, centred near ``e^-1`` whatever the layer's scale. A positive number
instead fixes sigma (``sigma_a`` for Laplace, ``sigma_c`` for Gaussian) as in the paper's formulas.
"""

from __future__ import annotations

import abc
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn as nn

from pkkd_lightning.distill.taps import TapRecord
from pkkd_lightning.validation import check_choice

#: ``"running_mean"`` or a fixed positive scale (a Literal, so that ``--model.sigma_ann 50`` parses as a number).
SigmaSpec = Literal["running_mean"] | float
#: Whether distances are centred over the output channels before the kernel (``KernelMap``).
Centering = Literal["none", "channel"]


class RunningScale(nn.Module):
    """A distance scale: fixed, or the running mean of the (absolute) distances seen in training.

    Args:
        sigma: ``"running_mean"`` or a positive fixed scale.
        momentum: weight of the newest batch in the running mean.
    """

    def __init__(self, sigma: SigmaSpec = "running_mean", momentum: float = 0.1) -> None:
        super().__init__()
        if isinstance(sigma, str) and sigma != "running_mean":
            raise ValueError(f"sigma must be 'running_mean' or a positive number, got {sigma!r}")
        if not isinstance(sigma, str) and not sigma > 0:
            raise ValueError(f"sigma must be 'running_mean' or a positive number, got {sigma!r}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.adaptive = isinstance(sigma, str)
        self.momentum = momentum
        self.register_buffer("scale", torch.tensor(1.0 if self.adaptive else float(sigma)))
        self.register_buffer("initialized", torch.tensor(not self.adaptive))

    @torch.no_grad()
    def update(self, distance: torch.Tensor) -> None:
        """Fold the batch mean of ``|distance|`` into the running mean (training mode, adaptive only)."""
        if not (self.adaptive and self.training):
            return
        batch_mean = distance.detach().float().abs().mean()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_mean)
            batch_mean /= dist.get_world_size()
        batch_mean = batch_mean.clamp_min(torch.finfo(torch.float32).tiny)
        if bool(self.initialized):
            self.scale.lerp_(batch_mean.to(self.scale), self.momentum)
        else:
            self.scale.copy_(batch_mean)
            self.initialized.fill_(True)

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        """The scale after folding ``distance`` into the running mean, in ``distance``'s dtype."""
        self.update(distance)
        return self.scale.to(distance.dtype)


def standardize_over_channels(distance: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(d - mean_c d) / std_c d`` at every (image, position): the channels' distances relative to each other."""
    centred = distance - distance.mean(dim=1, keepdim=True)
    return centred / centred.square().mean(dim=1, keepdim=True).add(eps).sqrt()


class KernelMap(nn.Module, abc.ABC):
    """A kernel over a layer's patch-filter distances: ``exp(-d / scale)`` per output position and filter.

    Args:
        sigma: ``"running_mean"`` or a fixed positive sigma (its meaning is the subclass's formula).
        momentum: momentum of the running-mean scale.
        apply_kernel: False returns the scaled distance ``d / scale`` itself (the "distance" ablation: no
            non-linearity, same scale).
        centering: ``none`` uses the distances as they are. ``channel`` **[ours]** standardises the distances over
            the output channels at every position (:func:`standardize_over_channels`) before scaling: the part of
            ``d`` shared by all filters (for the Gaussian kernel exactly the patch energy ``||x||^2``) cancels, so
            the map keeps what tells the filters apart. The running scale is then the mean absolute standardised
            distance.
    """

    def __init__(
        self,
        sigma: SigmaSpec = "running_mean",
        momentum: float = 0.1,
        apply_kernel: bool = True,
        centering: Centering = "none",
    ) -> None:
        super().__init__()
        check_choice("centering", centering, Centering)
        self.scale = RunningScale(self.scale_for(sigma), momentum)
        self.apply_kernel, self.centering = apply_kernel, centering

    @staticmethod
    def scale_for(sigma: SigmaSpec) -> SigmaSpec:
        """The divisor of the distance that a fixed ``sigma`` stands for in this kernel's formula."""
        return sigma

    @abc.abstractmethod
    def distance(self, record: TapRecord) -> torch.Tensor:
        """The distance ``d`` per output position and filter, shape of the layer output."""

    def forward(self, record: TapRecord) -> torch.Tensor:
        """Kernel value (or scaled distance) per output position and filter, shape of the layer output."""
        distance = self.distance(record)
        if self.centering == "channel":
            distance = standardize_over_channels(distance)
        scale = self.scale(distance)
        # exp(d * (-1 / scale)): two passes over the map instead of three for exp(-(d / scale))
        return torch.exp(distance * -scale.reciprocal()) if self.apply_kernel else distance / scale


class LaplaceKernel(KernelMap):
    """ANN side: ``g = exp(-||x - f||_1 / sigma_a) = exp(Y_A / sigma_a)`` (PKKD eq. 9), ``d = -Y_A``."""

    def distance(self, record: TapRecord) -> torch.Tensor:
        """``||x - f||_1 = -Y_A``, the negated adder output."""
        return -record.output


class GaussianKernel(KernelMap):
    """CNN side: ``h = exp(-||x - f||_2^2 / (2 sigma_c^2))`` from ``x.f``, ``||x||^2``, ``||f||^2`` (PKKD eq. 8).

    The squared distance is divided by ``2 sigma_c^2`` for a fixed ``sigma``, or by its running mean.
    """

    @staticmethod
    def scale_for(sigma: SigmaSpec) -> SigmaSpec:
        """``2 sigma_c^2`` for a fixed sigma (validated by :class:`RunningScale`)."""
        if isinstance(sigma, str) or not sigma > 0:
            return sigma
        return 2 * sigma**2

    def distance(self, record: TapRecord) -> torch.Tensor:
        """``||x - f||_2^2``, see :meth:`squared_distance`."""
        return self.squared_distance(record)

    @staticmethod
    def squared_distance(record: TapRecord) -> torch.Tensor:
        """``||x||^2 + ||f||^2 - 2 x.f`` per output position and filter, clamped at 0 against rounding."""
        if record.patch_sq_norms is None or record.filter_sq_norms is None:
            raise ValueError("GaussianKernel needs a conv tap record with patch and filter norms")
        filter_sq = record.filter_sq_norms.view(1, -1, 1, 1)
        return (record.patch_sq_norms + filter_sq - 2 * record.output).clamp_min(0)
