"""Kernel maps of PKKD (Xu et al., NeurIPS 2020, sec. 3.2) and the sigma policy that keeps them finite.

The CNN and ANN features follow different distributions (Gaussian-like and Laplacian-like weights), so PKKD
matches them after a kernel, each side with its own:

* CNN, Gaussian kernel: ``h(x, f) = exp(-||x - f||_2^2 / (2 sigma_c^2))`` with
  ``||x - f||_2^2 = ||x||^2 + ||f||^2 - 2 x.f``: computed from the conv output ``x.f`` and the patch and filter
  squared norms captured by :class:`~pkkd_lightning.distill.taps.FeatureTaps`; no extra pass over patches.
* ANN, Laplace kernel: ``g(x, f) = exp(-||x - f||_1 / sigma_a) = exp(Y_A / sigma_a)``, from the adder output.

Sigma policy (our choice, PAPER.md marks it open). Raw distances are in the tens to hundreds, where ``exp(-d)``
underflows to 0 and gives no gradient. With ``sigma="running_mean"`` (the default) each kernel divides its
distance by a running mean of that distance (exponential moving average over training batches, all-reduced
across data-parallel ranks so every replica uses the same value, frozen in eval mode): the kernel value is then
``exp(-d / mean(d))``, centred near ``e^-1`` whatever the layer's scale. A positive number instead fixes sigma
(``sigma_a`` for Laplace, ``sigma_c`` for Gaussian) as in the paper's formulas.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from pkkd_lightning.distill.taps import TapRecord

SigmaSpec = str | float


class RunningScale(nn.Module):
    """A distance scale: fixed, or the running mean of the distances seen in training.

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
        """Fold the batch mean of ``distance`` into the running mean (training mode, adaptive only)."""
        if not (self.adaptive and self.training):
            return
        batch_mean = distance.detach().float().mean()
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
        """``distance / scale`` after updating the running mean."""
        self.update(distance)
        return distance / self.scale.to(distance.dtype)


class LaplaceKernel(nn.Module):
    """ANN side: ``g = exp(-||x - f||_1 / sigma_a) = exp(Y_A / sigma_a)`` (PKKD eq. 9).

    With ``apply_kernel=False`` (the "no kernel" ablation) it returns the scaled distance ``-Y_A / sigma_a``
    itself, so the ablation removes the non-linearity but keeps the features on the same scale.
    """

    def __init__(self, sigma: SigmaSpec = "running_mean", momentum: float = 0.1, apply_kernel: bool = True) -> None:
        super().__init__()
        self.scale = RunningScale(sigma, momentum)
        self.apply_kernel = apply_kernel

    def forward(self, record: TapRecord) -> torch.Tensor:
        """Kernel value per output position and filter, shape of the adder output."""
        scaled = self.scale(-record.output)
        return torch.exp(-scaled) if self.apply_kernel else scaled


class GaussianKernel(nn.Module):
    """CNN side: ``h = exp(-||x - f||_2^2 / (2 sigma_c^2))`` from ``x.f``, ``||x||^2``, ``||f||^2`` (PKKD eq. 8).

    The squared distance is divided by ``2 sigma_c^2`` for a fixed ``sigma``, or by its running mean.
    ``apply_kernel=False`` returns the scaled squared distance, as :class:`LaplaceKernel` does.
    """

    def __init__(self, sigma: SigmaSpec = "running_mean", momentum: float = 0.1, apply_kernel: bool = True) -> None:
        super().__init__()
        if not isinstance(sigma, str) and not sigma > 0:
            raise ValueError(f"sigma must be 'running_mean' or a positive number, got {sigma!r}")
        self.scale = RunningScale(sigma if isinstance(sigma, str) else 2 * sigma**2, momentum)
        self.apply_kernel = apply_kernel

    @staticmethod
    def squared_distance(record: TapRecord) -> torch.Tensor:
        """``||x||^2 + ||f||^2 - 2 x.f`` per output position and filter, clamped at 0 against rounding."""
        if record.patch_sq_norms is None or record.filter_sq_norms is None:
            raise ValueError("GaussianKernel needs a conv tap record with patch and filter norms")
        filter_sq = record.filter_sq_norms.view(1, -1, 1, 1)
        return (record.patch_sq_norms + filter_sq - 2 * record.output).clamp_min(0)

    def forward(self, record: TapRecord) -> torch.Tensor:
        """Kernel value per output position and filter, shape of the conv output."""
        scaled = self.scale(self.squared_distance(record))
        return torch.exp(-scaled) if self.apply_kernel else scaled
