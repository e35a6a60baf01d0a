"""Pieces shared by the DataModules: argument checks, per-class subsets, the validation split, loaders.

Every DataModule here follows one recipe, implemented once in :class:`SplitDataModule`:

1. a subclass loads a raw split (items ``(image, label)`` with no transform) and its labels;
2. ``train_per_class`` / ``test_per_class`` keep the first N items of each class in the split's stable order
   (file order for ImageFolder trees and official batches), independent of any seed;
3. ``val_split`` optionally carves a seeded validation set out of the (subsetted) training split; when it is
   0 the test split doubles as validation set, as the PKKD paper evaluates on the test split;
4. the train split gets the training transform, everything else the deterministic evaluation transform.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes


def check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int ``>= minimum`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = f"an int >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"`{name}` must be {accepted}, got {value!r}")


def check_val_split(val_split: Any) -> None:
    """Raise ``ValueError`` unless ``val_split`` is an int ``>= 0`` (a count) or a float in ``[0, 1)``."""
    ok_int = isinstance(val_split, int) and not isinstance(val_split, bool) and val_split >= 0
    ok_float = isinstance(val_split, float) and 0.0 <= val_split < 1.0
    if not (ok_int or ok_float):
        raise ValueError(
            "`val_split` must be an int >= 0 (number of training items) or a float in [0, 1) "
            f"(fraction of the training split), got {val_split!r}"
        )


def first_per_class(targets: Sequence[int], per_class: int | None) -> list[int]:
    """Indices of the first ``per_class`` items of every class, in the order of ``targets``.

    Args:
        targets: Label of every item of a split, in the split's stable order.
        per_class: Items kept per class (a class with fewer keeps all); ``None`` keeps everything.

    Returns:
        Sorted indices into ``targets``.
    """
    if per_class is None:
        return list(range(len(targets)))
    taken: dict[int, int] = {}
    keep = []
    for index, label in enumerate(targets):
        label = int(label)
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            keep.append(index)
    return keep


def split_train_val(indices: Sequence[int], val_split: int | float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``indices`` into disjoint, sorted ``(train, val)`` lists with a seeded permutation.

    Args:
        indices: Items of the training split to divide.
        val_split: Number of validation items (int) or their fraction of ``indices`` (float in (0, 1)).
        seed: Seed of the permutation; the same seed and indices always give the same split.

    Returns:
        ``(train, val)`` index lists.
    """
    n = len(indices)
    n_val = val_split if isinstance(val_split, int) else round(val_split * n)
    if not 0 < n_val < n:
        raise ValueError(
            f"`val_split`={val_split!r} leaves {n_val} of {n} training items for validation; "
            "it must leave at least one item on each side"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val = sorted(indices[i] for i in order[:n_val])
    train = sorted(indices[i] for i in order[n_val:])
    return train, val


def data_not_found(what: str, path: Path, layouts: Sequence[str], remedy: str) -> FileNotFoundError:
    """Build the error for missing data: where it looked, the layouts it accepts and what to do."""
    listed = "\n".join(f"  ({chr(ord('A') + i)}) {layout}" for i, layout in enumerate(layouts))
    return FileNotFoundError(f"{what} not found under data_dir='{path}'. Accepted layouts:\n{listed}\n{remedy}")


def image_folder_split(root: Path, split: str, other: str) -> ImageFolder:
    """Open ``root/split`` as an ImageFolder after checking it has the same classes as ``root/other``.

    Args:
        root: Directory holding both split folders.
        split: Folder to open (``train``, ``test``, ``val``).
        other: Folder of the other split, whose class folders must match.

    Returns:
        The dataset, without transform (items are ``(PIL image, label)``).
    """
    for name in (split, other):
        if not (root / name).is_dir():
            raise FileNotFoundError(f"expected the ImageFolder split '{root / name}' (data_dir='{root}')")
    classes, _ = find_classes(root / split)
    other_classes, _ = find_classes(root / other)
    if classes != other_classes:
        only_split = sorted(set(classes) - set(other_classes))
        only_other = sorted(set(other_classes) - set(classes))
        raise ValueError(
            f"class folders differ between '{root / split}' and '{root / other}': "
            f"only in {split}/: {only_split}, only in {other}/: {only_other}"
        )
    return ImageFolder(root / split)


class TransformSubset(Dataset):
    """The items ``indices`` of a raw dataset, with ``transform`` applied to the input.

    Lets the training and validation sets share one raw dataset (one directory scan, one copy in memory)
    while using different transforms.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable | None) -> None:
        self.base, self.indices, self.transform = base, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        x, y = self.base[self.indices[index]]
        return (x if self.transform is None else self.transform(x)), y


class SplitDataModule(pl.LightningDataModule, abc.ABC):
    """Base of the DataModules: loader options, per-class subsets and the validation split.

    Subclasses set ``num_classes`` (an attribute or property, so a CLI can link it to the model) and
    implement :meth:`_load_split` and :meth:`_transforms`; the arguments are documented on the subclasses.
    """

    num_classes: int

    def __init__(
        self,
        *,
        train_per_class: int | None,
        test_per_class: int | None,
        val_split: int | float,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int,
        pin_memory: bool,
        persistent_workers: bool,
        seed: int,
    ) -> None:
        super().__init__()
        check_int("train_per_class", train_per_class, 1, optional=True)
        check_int("test_per_class", test_per_class, 1, optional=True)
        check_val_split(val_split)
        check_int("batch_size", batch_size, 1)
        check_int("eval_batch_size", eval_batch_size, 1, optional=True)
        check_int("num_workers", num_workers, 0)
        check_int("seed", seed, 0)
        self.train_per_class, self.test_per_class = train_per_class, test_per_class
        self.val_split, self.seed = val_split, seed
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers = persistent_workers
        self.classes: list[str] = []
        self.train_set: TransformSubset | None = None
        self.val_set: TransformSubset | None = None
        self.test_set: TransformSubset | None = None

    @abc.abstractmethod
    def _load_split(self, train: bool) -> tuple[Dataset, Sequence[int]]:
        """Return a raw split (items ``(input, label)``, no transform) and its labels; set ``self.classes``."""

    @abc.abstractmethod
    def _transforms(self) -> tuple[Callable, Callable]:
        """Return ``(train_transform, eval_transform)``; called after :meth:`_load_split`."""

    def setup(self, stage: str | None = None) -> None:
        """Build the splits a stage needs; the training split is only scanned when train or val come from it.

        Args:
            stage: ``fit``, ``validate``, ``test``, ``predict`` or ``None`` (everything).
        """
        needs_train = stage in (None, "fit") or (stage == "validate" and bool(self.val_split))
        needs_test = stage in (None, "test", "predict") or (stage in ("fit", "validate") and not self.val_split)
        if needs_train and self.train_set is None:
            base, targets = self._load_split(train=True)
            train_tf, eval_tf = self._transforms()
            indices = first_per_class(targets, self.train_per_class)
            if self.val_split:
                indices, val_indices = split_train_val(indices, self.val_split, self.seed)
                self.val_set = TransformSubset(base, val_indices, eval_tf)
            self.train_set = TransformSubset(base, indices, train_tf)
        if needs_test and self.test_set is None:
            base, targets = self._load_split(train=False)
            _, eval_tf = self._transforms()
            self.test_set = TransformSubset(base, first_per_class(targets, self.test_per_class), eval_tf)
        if not self.val_split:
            self.val_set = self.test_set

    def _loader(self, dataset: Dataset | None, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"the {split} split is not built: call setup() with a stage that needs it first")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            # Training drops a last partial batch: a batch of one image cannot be batch-normalised.
            drop_last=shuffle,
            num_workers=self.num_workers,
            # Pinning only helps (and only works without a warning) when there is a GPU to copy to.
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; order and augmentation follow the global seed (``seed_everything``)."""
        return self._loader(self.train_set, "train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        """Validation batches: the carved-out split when ``val_split`` > 0, else the test split."""
        return self._loader(self.val_set, "val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """Test batches, in the split's stable order."""
        return self._loader(self.test_set, "test", False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        """The test split again, unshuffled, for ``Trainer.predict``."""
        return self._loader(self.test_set, "test", False, self.eval_batch_size)
