"""CIFAR held in memory as uint8 and augmented on the training device: a data pipeline a GPU cannot outrun.

A ResNet-20 step on an H100 takes 13-34 ms for 256 images; decoding and augmenting 256 JPEG files per step on the
CPU, three runs at once, would be the bottleneck. :class:`CIFAR10DeviceDataModule` decodes every image once in
``setup`` into a ``uint8`` tensor (150 MB for all of CIFAR-10), hands the loader uint8 images (a quarter of the
float bytes to copy), and does the crop, the flip and the normalisation on the device in
``on_after_batch_transfer``. The random choices stay on the CPU side and per sample: the training transform draws
each image's crop offsets and flip from the sample's seed (:mod:`pkkd_lightning.data.sampler`), so batch order and
augmentation are still a function of the run's seed, exactly resumable and the same under DDP. The augmentation is
torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` in distribution, not draw for draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from pkkd_lightning.data.cifar import CIFAR10DataModule

PAD = 4
SIZE = 32


def decode_all(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a raw CIFAR split as a ``uint8`` tensor (N, 3, 32, 32), and the labels (N,)."""
    pixels = getattr(dataset, "data", None)  # torchvision's reader keeps the official batches as (N, 32, 32, 3)
    if isinstance(pixels, np.ndarray):
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(dataset.targets)
    decoded = [np.asarray(image, dtype=np.uint8) for image, _ in (dataset[i] for i in range(len(dataset)))]
    images = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(dataset.targets)


def draw_augmentation(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training transform: ``image`` and its augmentation ``(dy, dx, flip)`` drawn from torch's generator
    (seeded per sample by ``TransformSubset``): crop offsets in ``[0, 2 PAD]``, a flip with probability 1/2."""
    offsets = torch.randint(0, 2 * PAD + 1, (2,))
    flip = torch.rand(()) < 0.5
    return image, torch.stack([offsets[0], offsets[1], flip.long()])


def no_augmentation(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation transform: the centred crop and no flip, which leaves the image as it is."""
    return image, torch.tensor([PAD, PAD, 0])


def apply_augmentation(
    images: torch.Tensor, params: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Zero-pad ``PAD`` pixels, crop 32x32 at ``(dy, dx)``, flip where ``flip`` is 1, normalise; on any device.

    Args:
        images: uint8 (N, 3, 32, 32).
        params: (N, 3) integer ``(dy, dx, flip)`` per image.
        mean, std: per-channel normalisation of the [0, 1] pixel values.

    Returns:
        float32 (N, 3, 32, 32).
    """
    x = F.pad(images.float().div_(255), (PAD, PAD, PAD, PAD))
    n = x.shape[0]
    steps = torch.arange(SIZE, device=x.device)
    rows = (params[:, 0, None] + steps)[:, :, None]  # (N, 32, 1)
    cols = (params[:, 1, None] + steps)[:, None, :]  # (N, 1, 32)
    x = x.permute(0, 2, 3, 1)[torch.arange(n, device=x.device)[:, None, None], rows, cols]  # (N, 32, 32, 3)
    x = x.permute(0, 3, 1, 2)
    x = torch.where(params[:, 2, None, None, None].bool(), x.flip(-1), x)
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean_t) / std_t).contiguous()


class CIFAR10DeviceDataModule(CIFAR10DataModule):
    """CIFAR-10 (same arguments, layouts and splits as :class:`CIFAR10DataModule`) decoded once into memory and
    augmented on the device the batches go to (see the module docstring). Suited to GPUs; it also runs on CPUs."""

    def _load_split(self, train: bool) -> tuple[Dataset, Sequence[int]]:
        dataset, targets = super()._load_split(train)
        images, labels = decode_all(dataset)
        return TensorDataset(images, labels), targets

    def _transforms(self) -> tuple[Callable, Callable]:
        return (draw_augmentation if self.augment else no_augmentation), no_augmentation

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``((uint8 images, params), labels)`` -> ``(float images, labels)``, augmented and normalised here."""
        (images, params), labels = batch
        return apply_augmentation(images, params, self.mean, self.std), labels
