"""Pieces shared by the DataModules: argument checks, per-class subsets, the validation split, loaders.

Every DataModule here follows one recipe, implemented once in :class:`SplitDataModule`:

1. a subclass loads a raw split (items ``(image, label)`` with no transform) and its labels;
2. ``train_per_class`` / ``test_per_class`` keep the first N items of each class in the split's stable order
   (file order for ImageFolder trees and official batches), independent of any seed;
3. ``val_split`` optionally carves a seeded validation set out of the (subsetted) training split; when it is
   0 the test split doubles as validation set, as the PKKD paper evaluates on the test split;
4. the train split gets the training transform, everything else the deterministic evaluation transform;
5. training batches come from a :class:`ResumableLoader` over a :class:`SeededBlockSampler`: order and
   augmentation follow the run's seed and the epoch only, are sharded in blocks across DDP ranks, and resume
   exactly, also in the middle of an epoch (the position is in the checkpoint, see ``state_dict``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader, find_classes

from pkkd_lightning.data.sampler import ResumableLoader, SeededBlockSampler
from pkkd_lightning.data.seeding import mix_seeds, run_seed, seeded_rngs
from pkkd_lightning.validation import check_int


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


def load_image(path: str) -> Image.Image:
    """PIL's RGB image of a file; a file that cannot be decoded (truncated, corrupt, not an image) raises
    ``ValueError`` naming its path, which PIL's own errors (``OSError: Truncated File Read``) do not."""
    try:
        return default_loader(path)
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises all three for damaged files
        raise ValueError(f"cannot read image '{path}' ({type(err).__name__}: {err}): replace or remove it") from err


class SizeCheckedLoader:
    """ImageFolder ``loader``: PIL's RGB image of a file, after checking its size (a picklable callable, so it
    also works in DataLoader workers).

    Args:
        size: Expected ``(width, height)`` in pixels.
        dataset: Name of the data set for the error message, for example ``CIFAR-10``.
    """

    def __init__(self, size: tuple[int, int], dataset: str) -> None:
        self.size, self.dataset = size, dataset

    def __call__(self, path: str) -> Image.Image:
        image = load_image(path)
        if image.size != self.size:
            raise ValueError(
                f"image '{path}' is {image.size[0]}x{image.size[1]} pixels (width x height), but {self.dataset} "
                f"images must be {self.size[0]}x{self.size[1]}: resize or remove it"
            )
        return image


def image_folder_split(root: Path, split: str, other: str, loader: Callable[[str], Any] = load_image) -> ImageFolder:
    """Open ``root/split`` as an ImageFolder after checking it has the same classes as ``root/other``.

    Args:
        root: Directory holding both split folders.
        split: Folder to open (``train``, ``test``, ``val``).
        other: Folder of the other split, whose class folders must match.
        loader: Reads one image file (for example a :class:`SizeCheckedLoader`).

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
    return ImageFolder(root / split, loader=loader)


class TransformSubset(Dataset):
    """The items ``indices`` of a raw dataset, with ``transform`` applied to the input.

    Lets the training and validation sets share one raw dataset (one directory scan, one copy in memory)
    while using different transforms. An item is asked for by its position ``i`` (the transform draws from the
    global generators, as usual) or by a pair ``(i, sample_seed)``, as :class:`SeededBlockSampler` yields them:
    the transform then runs inside :func:`~pkkd_lightning.data.seeding.seeded_rngs`, so the augmentation is a
    function of the seed alone and the global generators are left as they were.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable | None) -> None:
        self.base, self.indices, self.transform = base, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[Any, Any]:
        if isinstance(index, tuple):
            index, sample_seed = index
            with seeded_rngs(sample_seed):
                return self[index]
        x, y = self.base[self.indices[index]]
        return (x if self.transform is None else self.transform(x)), y


class SplitDataModule(pl.LightningDataModule, abc.ABC):
    """Base of the DataModules: loader options, per-class subsets, the validation split, the training stream.

    Subclasses set ``num_classes`` (an attribute or property, so a CLI can link it to the model) and
    implement :meth:`_load_split` and :meth:`_transforms`. Their ``__init__`` declares, typed and documented,
    the :attr:`shared_options` next to its own (so each subclass keeps its defaults and the CLI shows every
    key) and calls ``super().__init__()`` first, before reassigning any argument: this constructor reads them
    from the subclass's arguments, which ``save_hyperparameters`` collects.
    """

    num_classes: int
    shared_options = (
        "train_per_class",
        "test_per_class",
        "val_split",
        "batch_size",
        "eval_batch_size",
        "num_workers",
        "pin_memory",
        "persistent_workers",
        "seed",
    )

    def __init__(self) -> None:
        super().__init__()
        # Collects the arguments of the calling subclass constructors (Lightning inspects their frames).
        self.save_hyperparameters()
        hp = self.hparams
        missing = [name for name in self.shared_options if name not in hp]
        if missing:
            raise TypeError(f"{type(self).__name__}.__init__ must declare the shared DataModule options {missing}")
        check_int("train_per_class", hp.train_per_class, 1, optional=True)
        check_int("test_per_class", hp.test_per_class, 1, optional=True)
        check_val_split(hp.val_split)
        check_int("batch_size", hp.batch_size, 1)
        check_int("eval_batch_size", hp.eval_batch_size, 1, optional=True)
        check_int("num_workers", hp.num_workers, 0)
        check_int("seed", hp.seed, 0)
        self.train_per_class, self.test_per_class = hp.train_per_class, hp.test_per_class
        self.val_split, self.seed = hp.val_split, hp.seed
        self.batch_size = hp.batch_size
        self.eval_batch_size = hp.batch_size if hp.eval_batch_size is None else hp.eval_batch_size
        self.num_workers, self.pin_memory = hp.num_workers, hp.pin_memory
        self.persistent_workers = hp.persistent_workers
        self.classes: list[str] = []
        self.train_set: TransformSubset | None = None
        self.val_set: TransformSubset | None = None
        self.test_set: TransformSubset | None = None
        self._train_loader: ResumableLoader | None = None
        self._train_position_to_load: dict[str, int] | None = None

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

    def _built(self, dataset: Dataset | None, split: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(f"the {split} split is not built: call setup() with a stage that needs it first")
        return dataset

    def _loader_options(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            # Pinning only helps (and only works without a warning) when there is a GPU to copy to.
            "pin_memory": self.pin_memory and torch.cuda.is_available(),
            "persistent_workers": self.persistent_workers and self.num_workers > 0,
        }

    def _eval_loader(self, dataset: Dataset | None, split: str) -> DataLoader:
        return DataLoader(self._built(dataset, split), batch_size=self.eval_batch_size, **self._loader_options())

    def train_dataloader(self) -> ResumableLoader:
        """Training batches from a :class:`SeededBlockSampler`: shuffled per epoch with the run's seed
        (:func:`~pkkd_lightning.data.seeding.run_seed`, the DataModule's ``seed`` when none is set), each sample
        augmented with its own seed, this rank's block of every global batch; the tail that does not fill a whole
        optimisation step is dropped (a batch of one image cannot be batch-normalised). Rank, world size and
        ``accumulate_grad_batches`` come from the trainer (0, 1 and 1 without one).

        Raises:
            ValueError: When the training split holds less than one optimisation step.
        """
        train_set = self._built(self.train_set, "train")
        rank, world, accumulate = 0, 1, 1
        if self.trainer is not None:
            trainer = self.trainer
            rank, world, accumulate = trainer.global_rank, trainer.world_size, trainer.accumulate_grad_batches
        if len(train_set) < self.batch_size * world * accumulate:
            carved = f", after val_split={self.val_split!r} took {len(self.val_set)} out" if self.val_split else ""
            raise ValueError(
                f"no training batch: the training split has {len(train_set)} items{carved}, fewer than one "
                f"optimisation step's data.init_args.batch_size={self.batch_size} x {world} process(es) x "
                f"{accumulate} accumulated batch(es); lower data.init_args.batch_size or keep more items per class "
                f"with data.init_args.train_per_class (now {self.train_per_class})"
            )
        sampler = SeededBlockSampler(train_set, self.batch_size, world, rank, run_seed(self.seed), accumulate)
        generator = torch.Generator().manual_seed(mix_seeds(sampler.seed, 1))  # keeps the loader off the global stream
        loader = ResumableLoader(
            train_set, batch_size=self.batch_size, sampler=sampler, generator=generator, **self._loader_options()
        )
        if self._train_position_to_load is not None:
            loader.load_state_dict(self._train_position_to_load)
            self._train_position_to_load = None
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> DataLoader:
        """Validation batches: the carved-out split when ``val_split`` > 0, else the test split."""
        return self._eval_loader(self.val_set, "val")

    def test_dataloader(self) -> DataLoader:
        """Test batches, in the split's stable order."""
        return self._eval_loader(self.test_set, "test")

    def predict_dataloader(self) -> DataLoader:
        """The test split again, unshuffled, for ``Trainer.predict``."""
        return self._eval_loader(self.test_set, "test")

    def state_dict(self) -> dict[str, Any]:
        """The training stream's position (:meth:`ResumableLoader.state_dict`), saved in checkpoints.

        Lightning also saves it as the loader's state, but restores that only when the train loader is built
        after the loop state is restored; ``configure_optimizers`` reading ``trainer.estimated_stepping_batches``
        builds it before. The DataModule's state is restored before either, so a resumed ``fit`` always gets it.
        """
        return {} if self._train_loader is None else {"train_position": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved training position for the next :meth:`train_dataloader`."""
        self._train_position_to_load = state_dict.get("train_position")
