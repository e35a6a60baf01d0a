"""The embedded default data set: scikit-learn's bundled handwritten digits, no download needed.

``sklearn.datasets.load_digits`` ships 1,797 greyscale 8x8 images of the digits 0-9 (values 0..16) inside the
package. They are scaled to [0, 1], upsampled (bilinear) to ``image_size`` and repeated to ``channels``, so the
CIFAR models run on them unchanged, then split train/test with a seeded stratified split. Everything is held in
memory and set up in well under a second, which makes it the data of the demo configuration and of tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset, TensorDataset
from torchvision import transforms as T

from pkkd_lightning.data.common import SplitDataModule
from pkkd_lightning.validation import check_int


class DigitsDataModule(SplitDataModule):
    """scikit-learn's 8x8 digits as small image tensors, held in memory.

    Normalisation uses the mean and standard deviation of the training split's pixels (one value for all
    channels, since they are copies); they are available as ``mean``/``std`` after ``setup``.

    Args:
        image_size: Side the 8x8 images are upsampled to (bilinear); 8 keeps them as they are.
        channels: Number of channels (the grey image is repeated), 3 for RGB models.
        test_fraction: Fraction of the 1,797 images held out as test split, stratified by class.
        split_seed: Seed of the stratified train/test split.
        augment: Train with a random crop after zero padding of ``image_size // 8`` pixels; when False the
            training split gets the deterministic evaluation transform (normalisation only).
        train_per_class: Keep only the first N training images of each class (data set order), or all.
        test_per_class: Keep only the first N test images of each class, or all.
        val_split: 0 validates on the test split; an int N > 0 or a float in (0, 1) carves N images (or that
            fraction) out of the training split, chosen with ``seed``.
        batch_size: Training batch size.
        eval_batch_size: Validation/test/predict batch size; ``None`` uses ``batch_size``.
        num_workers: DataLoader worker processes (0, the default, suits in-memory tensors).
        pin_memory: Pin host memory for faster GPU copies (ignored without CUDA).
        persistent_workers: Keep workers alive between epochs (only applies when ``num_workers`` > 0).
        seed: Seed of the validation split; batch order and augmentation follow the run's global seed
            (``seed_everything``), or this seed when the run sets none.
    """

    num_classes = 10

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        augment: bool = True,
        train_per_class: int | None = None,
        test_per_class: int | None = None,
        val_split: int | float = 0,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()  # reads the shared options (train_per_class ... seed) from these arguments
        check_int("image_size", image_size, 8)
        check_int("channels", channels, 1)
        check_int("split_seed", split_seed, 0)
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, float) or not 0 < test_fraction < 1:
            raise ValueError(f"`test_fraction` must be a float in (0, 1), got {test_fraction!r}")
        self.image_size, self.channels = image_size, channels
        self.test_fraction, self.split_seed, self.augment = test_fraction, split_seed, augment
        self.classes = [str(digit) for digit in range(10)]
        self.mean: float | None = None
        self.std: float | None = None
        self._splits: dict[bool, TensorDataset] = {}

    def _build(self) -> None:
        digits = load_digits()
        images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)
        if self.image_size != 8:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        images = images.repeat(1, self.channels, 1, 1)
        labels = torch.from_numpy(digits.target).long()
        train_idx, test_idx = train_test_split(
            range(len(labels)),
            test_size=self.test_fraction,
            random_state=self.split_seed,
            stratify=labels.numpy(),
        )
        # Sorted, so that per-class subsets take the first images in the data set's own order.
        train_idx, test_idx = sorted(train_idx), sorted(test_idx)
        self.mean = images[train_idx].mean().item()
        self.std = images[train_idx].std().item()
        self._splits = {
            True: TensorDataset(images[train_idx], labels[train_idx]),
            False: TensorDataset(images[test_idx], labels[test_idx]),
        }

    def _load_split(self, train: bool) -> tuple[Dataset, Sequence[int]]:
        if not self._splits:
            self._build()
        dataset = self._splits[train]
        return dataset, dataset.tensors[1].tolist()

    def export_info(self) -> dict[str, Any]:
        """What a network trained on these digits needs to classify new images: the class names ``"0"``..``"9"``
        and the evaluation transform (the image at ``image_size`` x ``image_size``, normalised with the training
        split's mean and std, repeated over ``channels``). The digits are light strokes on a dark background."""
        if self.mean is None:
            self._build()
        size = self.image_size
        return {
            "class_names": list(self.classes),
            "input_size": [size, size],
            "mean": [self.mean] * self.channels,
            "std": [self.std] * self.channels,
            "resize": size,
            "crop": size,
        }

    def _transforms(self) -> tuple[Callable, Callable]:
        normalize = T.Normalize([self.mean] * self.channels, [self.std] * self.channels)
        if not self.augment:
            return normalize, normalize
        # Padding with 0 (the background of the [0, 1] images) happens before normalisation on purpose.
        crop = T.RandomCrop(self.image_size, padding=max(1, self.image_size // 8))
        return T.Compose([crop, normalize]), normalize
