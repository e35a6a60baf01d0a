"""ImageNet (ILSVRC-2012) DataModule with the standard ResNet recipe (docs/method.md section 4).

Training: random-resized crop 224 and horizontal flip, or timm's RandAugment/AutoAugment policies through
``timm_augment`` (no mixup or cutmix: those act on batches and belong in the LightningModule). Evaluation:
resize 256 and centre crop 224. Both normalise with the ImageNet mean and std.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets.folder import find_classes

from pkkd_lightning.data.common import SplitDataModule, data_not_found, image_folder_split
from pkkd_lightning.validation import check_int


class ImageNetDataModule(SplitDataModule):
    """ImageNet from an ImageFolder tree: ``data_dir/train/<wnid>/*`` and ``data_dir/val/<wnid>/*``.

    The official validation images come in one flat folder; sort them into class folders first (for example
    with the widely used ``valprep.sh``). ``num_classes`` is the number of class folders in ``train/``
    (1000 for ILSVRC-2012, and 1000 while ``train/`` does not exist yet).

    Args:
        data_dir: Directory holding ``train/`` and ``val/`` in ImageFolder layout.
        image_size: Side of the training crop and of the evaluation centre crop.
        resize_size: Shorter side the evaluation images are resized to before the centre crop.
        augment: Train with random-resized crop and flip; when False the training split gets the
            deterministic evaluation transform.
        timm_augment: A timm auto-augment policy string (for example ``"rand-m9-mstd0.5"``, ``"original"``,
            ``"augmix-m5-w4-d2"``) built with ``timm.data.create_transform``; ``None`` uses torchvision's plain
            random-resized crop and flip. Ignored when ``augment`` is False.
        train_per_class: Keep only the first N training images of each class (sorted file order), or all.
        test_per_class: Keep only the first N images of each class of the test split (``val/``), or all.
        val_split: 0 validates on ``val/``; an int N > 0 or a float in (0, 1) carves N images (or that
            fraction) out of ``train/`` instead, chosen with ``seed``.
        batch_size: Training batch size.
        eval_batch_size: Validation/test/predict batch size; ``None`` uses ``batch_size``.
        num_workers: DataLoader worker processes (0 loads in the main process).
        pin_memory: Pin host memory for faster GPU copies (ignored without CUDA).
        persistent_workers: Keep workers alive between epochs (only applies when ``num_workers`` > 0).
        seed: Seed of the validation split; batch order and augmentation follow the run's global seed
            (``seed_everything``), or this seed when the run sets none.
    """

    def __init__(
        self,
        data_dir: str | Path,
        image_size: int = 224,
        resize_size: int = 256,
        augment: bool = True,
        timm_augment: str | None = None,
        train_per_class: int | None = None,
        test_per_class: int | None = None,
        val_split: int | float = 0,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()  # reads the shared options (train_per_class ... seed) from these arguments
        check_int("image_size", image_size, 1)
        check_int("resize_size", resize_size, image_size)
        self.data_dir = Path(data_dir).expanduser()
        self.image_size, self.resize_size = image_size, resize_size
        self.augment, self.timm_augment = augment, timm_augment
        # Built now so that a bad policy string fails at construction, not at the first batch.
        self._train_transform, self._eval_transform = self._build_transforms()

    @property
    def num_classes(self) -> int:
        """Number of class folders in ``train/`` (1000 while it does not exist)."""
        train_dir = self.data_dir / "train"
        return len(find_classes(train_dir)[0]) if train_dir.is_dir() else 1000

    def export_info(self) -> dict[str, Any]:
        """What a network trained on this data needs to classify new images: the class names (the folders of
        ``train/``; None while it does not exist) and the evaluation transform (shorter side resized to
        ``resize_size``, centre crop ``image_size``, ImageNet mean and std)."""
        train_dir = self.data_dir / "train"
        class_names = self.classes or (find_classes(train_dir)[0] if train_dir.is_dir() else None)
        return {
            "class_names": list(class_names) if class_names else None,
            "input_size": [self.image_size, self.image_size],
            "mean": list(IMAGENET_DEFAULT_MEAN),
            "std": list(IMAGENET_DEFAULT_STD),
            "resize": self.resize_size,
            "crop": self.image_size,
        }

    def _build_transforms(self) -> tuple[Callable, Callable]:
        normalize = T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
        evaluate = T.Compose([T.Resize(self.resize_size), T.CenterCrop(self.image_size), T.ToTensor(), normalize])
        if not self.augment:
            return evaluate, evaluate
        if self.timm_augment is None:
            train = T.Compose([T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
            return train, evaluate
        try:
            train = create_transform(
                self.image_size,
                is_training=True,
                auto_augment=self.timm_augment,
                mean=IMAGENET_DEFAULT_MEAN,
                std=IMAGENET_DEFAULT_STD,
                re_prob=0.0,
            )
        except (AssertionError, ValueError, KeyError) as err:
            raise ValueError(
                f"`timm_augment` must be None or a timm auto-augment policy such as 'rand-m9-mstd0.5', "
                f"'original', 'v0' or 'augmix-m5-w4-d2', got {self.timm_augment!r} ({err})"
            ) from err
        return train, evaluate

    def _load_split(self, train: bool) -> tuple[Dataset, Sequence[int]]:
        if not self.data_dir.is_dir():
            raise data_not_found(
                "ImageNet",
                self.data_dir,
                [f"ImageFolder tree: {self.data_dir / 'train'}/<wnid>/*.JPEG and {self.data_dir / 'val'}/<wnid>/*"],
                "Place the data there (validation images sorted into class folders).",
            )
        split, other = ("train", "val") if train else ("val", "train")
        dataset = image_folder_split(self.data_dir, split, other)
        self.classes = list(dataset.classes)
        return dataset, dataset.targets

    def _transforms(self) -> tuple[Callable, Callable]:
        return self._train_transform, self._eval_transform
