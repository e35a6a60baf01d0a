"""Any image classification data set stored as an ImageFolder tree, with one of three augmentation presets.

Layout under ``data_dir``: ``train/<class>/*`` and ``test/<class>/*``, and optionally ``val/<class>/*``, which is
then the validation split (otherwise ``val_split`` carves one out of ``train/``, or the test split doubles as
validation set, as for the other DataModules). Class names are the folder names, sorted (torchvision's
``find_classes``), and must be the same in every split. Images are read as RGB, whatever their mode.

Every image is brought to the square ``image_size`` the network sees. Evaluation resizes the shorter side to
``resize`` and centre-crops ``image_size`` (``resize`` is ``image_size`` itself, or ``image_size * 8 / 7`` for the
``imagenet`` preset, the classic 256/224), the same geometry the other DataModules use, so that
:meth:`ImageFolderDataModule.export_info` describes every one of them the same way.

Normalisation uses ``mean``/``std`` when given, else the per-channel statistics of a seeded sample of up to
:data:`STATS_IMAGES` images of ``train/`` as evaluation sees them (resized and cropped), computed once in
``setup``. The values in use are part of the DataModule's ``state_dict``, hence of every checkpoint, and a run
restored from one (``test``/``validate``/``predict``/resumed ``fit`` with ``ckpt_path``, or
``load_from_checkpoint``) normalises with the checkpoint's values, not with a recomputation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension

from pkkd_lightning.data.common import (
    SplitDataModule,
    TransformSubset,
    data_not_found,
    first_per_class,
    image_folder_split,
)
from pkkd_lightning.validation import check_choice, check_int, check_number

Augment = Literal["cifar", "imagenet", "none"]
STATS_IMAGES = 1000  # images of train/ sampled for the normalisation statistics


def _check_statistics(mean: Any, std: Any) -> None:
    """Raise ``ValueError`` unless ``mean`` and ``std`` are both None or both 3 numbers (std > 0)."""
    if (mean is None) != (std is None):
        raise ValueError(
            "`mean` and `std` must be given together (each a list of 3 numbers, one per RGB channel) or both be "
            f"null (computed from the training images); got mean={mean!r}, std={std!r}"
        )
    if mean is None:
        return
    for key, values, low_open in (("mean", mean, False), ("std", std, True)):
        if not isinstance(values, (list, tuple)) or len(values) != 3:
            raise ValueError(f"`{key}` must be a list of 3 numbers (one per RGB channel) or null; got {values!r}")
        for value in values:
            check_number(key, value, low=0.0 if low_open else None, low_open=low_open)


def _describe(mean: list[float], std: list[float]) -> str:
    return f"mean={[round(v, 4) for v in mean]}, std={[round(v, 4) for v in std]}"


def _empty_class_folders(split_dir: Path) -> list[Path]:
    """Class folders of ``split_dir`` without any file ImageFolder accepts (searched recursively, as it does)."""
    if not split_dir.is_dir():
        return []
    empty = []
    for name in find_classes(split_dir)[0]:
        files = (f for _, _, names in os.walk(split_dir / name, followlinks=True) for f in names)
        if not any(has_file_allowed_extension(f, IMG_EXTENSIONS) for f in files):
            empty.append(split_dir / name)
    return empty


class ImageFolderDataModule(SplitDataModule):
    """An image classification data set from ImageFolder trees ``train/``, ``test/`` and optionally ``val/``.

    ``num_classes`` is the number of class folders in ``train/``, known from construction on (the CLI links it
    to ``model.num_classes``). Computed normalisation statistics are logged and saved in checkpoints (see the
    module documentation); ``mean``/``std`` hold the values in use after ``setup``.

    Args:
        data_dir: Directory holding ``train/<class>/*``, ``test/<class>/*`` and optionally ``val/<class>/*``.
        image_size: Side of the square images the network sees.
        mean: Per-channel (RGB) mean used for normalisation, in [0, 1] pixel units; ``None`` computes it (and
            ``std``) from a seeded sample of up to 1,000 images of ``train/``.
        std: Per-channel standard deviation, given together with ``mean``.
        augment: Training augmentation: ``cifar`` resizes and centre-crops as evaluation does, then random crop
            with zero padding of ``image_size / 8`` pixels (4 at 32) and horizontal flip; ``imagenet``
            random-resized crop and horizontal flip (and evaluation resizes to ``image_size * 8 / 7`` before its
            centre crop); ``none`` the evaluation transform.
        train_per_class: Keep only the first N training images of each class (sorted file order), or all.
        test_per_class: Keep only the first N images of each class of ``test/`` (and of ``val/``), or all.
        val_split: 0 validates on ``val/`` when present, else on ``test/``; an int N > 0 or a float in (0, 1)
            carves N images (or that fraction) out of ``train/`` instead, chosen with ``seed`` (not allowed when
            ``val/`` exists).
        batch_size: Training batch size.
        eval_batch_size: Validation/test/predict batch size; ``None`` uses ``batch_size``.
        num_workers: DataLoader worker processes (0 loads in the main process).
        pin_memory: Pin host memory for faster GPU copies (ignored without CUDA).
        persistent_workers: Keep workers alive between epochs (only applies when ``num_workers`` > 0).
        seed: Seed of the validation split and of the sample the statistics are computed from; batch order and
            augmentation follow the run's global seed (``seed_everything``), or this seed when the run sets none.
    """

    def __init__(
        self,
        data_dir: str | Path,
        image_size: int = 224,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        augment: Augment = "imagenet",
        train_per_class: int | None = None,
        test_per_class: int | None = None,
        val_split: int | float = 0,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()  # reads the shared options (train_per_class ... seed) from these arguments
        check_int("image_size", image_size, 1)
        _check_statistics(mean, std)
        check_choice("augment", augment, Augment)
        self.data_dir = Path(data_dir).expanduser()
        self.image_size, self.augment = image_size, augment
        self.mean = None if mean is None else [float(v) for v in mean]
        self.std = None if std is None else [float(v) for v in std]
        self._statistics_given = mean is not None
        self._folders: dict[str, ImageFolder] = {}
        self._normalize: T.Normalize | None = None
        self._train_transform: Callable | None = None
        self._eval_transform: Callable | None = None
        self._val_folder_set: TransformSubset | None = None

    @property
    def num_classes(self) -> int:
        """Number of class folders in ``train/``."""
        return len(self._class_names())

    @property
    def resize_size(self) -> int:
        """Side the shorter image side is resized to before the evaluation centre crop of ``image_size``."""
        return round(self.image_size * 8 / 7) if self.augment == "imagenet" else self.image_size

    def _not_found(self) -> FileNotFoundError:
        return data_not_found(
            "image data",
            self.data_dir,
            [
                f"ImageFolder tree: {self.data_dir / 'train'}/<class>/*, {self.data_dir / 'test'}/<class>/* and "
                f"optionally {self.data_dir / 'val'}/<class>/* (the same class folders in each)"
            ],
            f"Place the images there, one folder per class, with one of the extensions {', '.join(IMG_EXTENSIONS)}.",
        )

    def _class_names(self) -> list[str]:
        if not self.data_dir.is_dir():
            raise self._not_found()
        train_dir = self.data_dir / "train"
        if not train_dir.is_dir():
            raise FileNotFoundError(f"expected the ImageFolder split '{train_dir}' (data_dir='{self.data_dir}')")
        return find_classes(train_dir)[0]

    def _folder(self, split: str, other: str) -> ImageFolder:
        """The ImageFolder of ``data_dir/split`` (scanned once), checked against the class folders of ``other``."""
        if split not in self._folders:
            if not self.data_dir.is_dir():
                raise self._not_found()
            try:
                self._folders[split] = image_folder_split(self.data_dir, split, other)
            except FileNotFoundError as err:
                # ImageFolder's own message names the empty classes but not where they are.
                empty = _empty_class_folders(self.data_dir / split)
                if empty:
                    listed = ", ".join(f"'{path}'" for path in empty)
                    raise FileNotFoundError(
                        f"class folders without images: {listed}; every class folder "
                        f"needs at least one file with an extension in {', '.join(IMG_EXTENSIONS)}: add images "
                        "or remove the folder (from every split)"
                    ) from err
                raise
        return self._folders[split]

    def _training_statistics(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and (population) standard deviation of up to :data:`STATS_IMAGES` images of ``train/``,
        drawn with ``seed``, as evaluation sees them (resized and centre-cropped, before normalisation)."""
        base = self._folder("train", "test")
        generator = torch.Generator().manual_seed(self.seed)
        sample = sorted(torch.randperm(len(base), generator=generator)[:STATS_IMAGES].tolist())
        pixels = T.Compose([*self._eval_geometry(), T.ToTensor()])
        loader = DataLoader(
            TransformSubset(base, sample, pixels), batch_size=self.eval_batch_size, num_workers=self.num_workers
        )
        total = torch.zeros(3, dtype=torch.float64)
        squares = torch.zeros(3, dtype=torch.float64)
        for x, _ in loader:
            x = x.double()
            total += x.sum(dim=(0, 2, 3))
            squares += x.square().sum(dim=(0, 2, 3))
        count = len(sample) * self.image_size**2
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(0).sqrt()
        if (std == 0).any():
            raise ValueError(
                f"the {len(sample)} sampled images of '{self.data_dir / 'train'}' have a constant channel "
                f"(std={std.tolist()}): pass `mean` and `std` explicitly"
            )
        rank_zero_info(
            f"ImageFolderDataModule: normalising with {_describe(mean.tolist(), std.tolist())} computed from "
            f"{len(sample)} images of '{self.data_dir / 'train'}' (saved in checkpoints)"
        )
        return mean.tolist(), std.tolist()

    def _eval_geometry(self) -> list[Callable]:
        return [T.Resize(self.resize_size), T.CenterCrop(self.image_size)]

    def _build_transforms(self) -> tuple[Callable, Callable]:
        self._normalize = T.Normalize(self.mean, self.std)
        tensor = [T.ToTensor(), self._normalize]
        evaluate = T.Compose([*self._eval_geometry(), *tensor])
        if self.augment == "none":
            return evaluate, evaluate
        if self.augment == "cifar":
            crop = T.RandomCrop(self.image_size, padding=max(1, self.image_size // 8))
            train = T.Compose([*self._eval_geometry(), crop, T.RandomHorizontalFlip(), *tensor])
        else:
            train = T.Compose([T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip(), *tensor])
        return train, evaluate

    def setup(self, stage: str | None = None) -> None:
        """Settle the normalisation (computing it when not given or restored), then build the splits a stage
        needs; ``val/``, when present, is the validation split.

        Args:
            stage: ``fit``, ``validate``, ``test``, ``predict`` or ``None`` (everything).
        """
        val_dir = self.data_dir / "val"
        has_val = val_dir.is_dir()
        if has_val and self.val_split:
            raise ValueError(
                f"`val_split`={self.val_split!r} carves a validation split out of train/, but '{val_dir}' holds "
                "one: set val_split=0 to validate on val/, or move that folder away to carve one out of train/"
            )
        if self._normalize is None:
            if self.mean is None:
                self.mean, self.std = self._training_statistics()
            self._train_transform, self._eval_transform = self._build_transforms()
        super().setup(stage)
        if has_val:
            if stage in (None, "fit", "validate") and self._val_folder_set is None:
                base = self._folder("val", "train")
                indices = first_per_class(base.targets, self.test_per_class)
                self._val_folder_set = TransformSubset(base, indices, self._eval_transform)
            self.val_set = self._val_folder_set

    def _load_split(self, train: bool) -> tuple[Dataset, Sequence[int]]:
        dataset = self._folder(*(("train", "test") if train else ("test", "train")))
        self.classes = list(dataset.classes)
        return dataset, dataset.targets

    def _transforms(self) -> tuple[Callable, Callable]:
        return self._train_transform, self._eval_transform

    def export_info(self) -> dict[str, Any]:
        """What a deployed network needs to know about its input: class names, geometry and normalisation.

        Returns:
            ``class_names`` (index order), ``input_size`` ``[height, width]``, per-channel ``mean``/``std`` (RGB,
            on [0, 1] pixels), and the evaluation geometry: resize the shorter side to ``resize``, centre-crop
            ``crop``.

        Raises:
            RuntimeError: When ``mean``/``std`` are still to be computed (call ``setup`` first).
        """
        if self.mean is None:
            raise RuntimeError(
                "ImageFolderDataModule.export_info: `mean`/`std` are computed from the training images in setup(); "
                "call setup() (or load a checkpoint's state) first, or pass them explicitly"
            )
        return {
            "class_names": self._class_names(),
            "input_size": [self.image_size, self.image_size],
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize_size,
            "crop": self.image_size,
        }

    def state_dict(self) -> dict[str, Any]:
        """The base's state (the training position) and the normalisation in use, once known."""
        state = super().state_dict()
        if self.mean is not None:
            state["normalization"] = {"mean": list(self.mean), "std": list(self.std)}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the base's state and the checkpoint's normalisation, also into transforms already built.

        Raises:
            ValueError: When ``mean``/``std`` were given and differ from the checkpoint's.
        """
        super().load_state_dict(state_dict)
        saved = state_dict.get("normalization")
        if saved is None:
            return
        mean, std = [float(v) for v in saved["mean"]], [float(v) for v in saved["std"]]
        if self._statistics_given and (mean, std) != (self.mean, self.std):
            raise ValueError(
                f"`mean`={self.mean} and `std`={self.std} differ from the checkpoint's mean={mean}, std={std}, "
                "which the network was trained with: drop `mean`/`std` from the data config to use the checkpoint's"
            )
        self.mean, self.std = mean, std
        if self._normalize is not None:
            self._normalize.mean, self._normalize.std = mean, std
        rank_zero_info(f"ImageFolderDataModule: normalising with the checkpoint's {_describe(mean, std)}")
