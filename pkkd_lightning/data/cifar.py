"""CIFAR-10 and CIFAR-100 DataModules (Krizhevsky, 2009) with the PKKD training recipe (docs/method.md section 4).

Two on-disk layouts are detected under ``data_dir``:

* the official python batches, ``cifar-10-batches-py/`` or ``cifar-100-python/``, as torchvision's
  ``CIFAR10``/``CIFAR100`` read them;
* an ImageFolder tree, ``train/<class>/*`` and ``test/<class>/*`` (for example a JPEG re-encoding).

When both are present the official batches are used.

The official batches are read by torchvision's own classes with one change: the per-file md5 check is
replaced by an existence check. torchvision pins the md5 of every batch, so it would reject any copy that is
not byte-identical to the release (a re-pickled or subsetted copy, or the small fixtures the tests write in the
same format). Downloads keep their integrity check: ``download=True`` fetches the release archive through
torchvision, which verifies the archive's md5 before extracting it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets import utils as tv_utils

from pkkd_lightning.data.common import SizeCheckedLoader, SplitDataModule, data_not_found, image_folder_split

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# CIFAR-100's own channel statistics, as commonly used for it (the PKKD paper only quotes CIFAR-10's).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
#: The class names of the official releases (``batches.meta`` / ``meta``), in label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# fmt: off
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)
# fmt: on


def _existence_only(files: list[list[str]]) -> list[list[str | None]]:
    return [[name, None] for name, _ in files]


class _CIFAR10Batches(CIFAR10):
    """torchvision's CIFAR-10 reader checking that the batch files exist rather than their md5."""

    train_list = _existence_only(CIFAR10.train_list)
    test_list = _existence_only(CIFAR10.test_list)
    meta = {**CIFAR10.meta, "md5": None}


class _CIFAR100Batches(CIFAR100):
    """torchvision's CIFAR-100 reader checking that the batch files exist rather than their md5."""

    train_list = _existence_only(CIFAR100.train_list)
    test_list = _existence_only(CIFAR100.test_list)
    meta = {**CIFAR100.meta, "md5": None}


class _CIFARDataModule(SplitDataModule):
    """CIFAR DataModule; :class:`CIFAR10DataModule` and :class:`CIFAR100DataModule` only set constants.

    Args:
        data_dir: Directory holding the official python batches (``cifar-10-batches-py/`` or
            ``cifar-100-python/``) or an ImageFolder tree (``train/<class>/*``, ``test/<class>/*``).
        download: Fetch the official batches into ``data_dir`` in ``prepare_data`` when neither layout is
            there (needs network; never done in ``setup``).
        augment: Train with random crop 32 (padding 4) and horizontal flip; when False the training split
            gets the deterministic evaluation transform (to-tensor and normalisation only).
        train_per_class: Keep only the first N training items of each class (stable file order), or all.
        test_per_class: Keep only the first N test items of each class, or all.
        val_split: 0 validates on the test split (as the paper reports); an int N > 0 or a float in (0, 1)
            carves N items (or that fraction) out of the training split, chosen with ``seed``.
        batch_size: Training batch size (the paper uses 256).
        eval_batch_size: Validation/test/predict batch size; ``None`` uses ``batch_size``.
        num_workers: DataLoader worker processes (0 loads in the main process).
        pin_memory: Pin host memory for faster GPU copies (ignored without CUDA).
        persistent_workers: Keep workers alive between epochs (only applies when ``num_workers`` > 0).
        seed: Seed of the validation split; batch order and augmentation follow the run's global seed
            (``seed_everything``), or this seed when the run sets none.
    """

    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    release_classes: tuple[str, ...]
    _release: type[CIFAR10]
    _reader: type[CIFAR10]

    def __init__(
        self,
        data_dir: str | Path,
        download: bool = False,
        augment: bool = True,
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
        self.data_dir = Path(data_dir).expanduser()
        self.download, self.augment = download, augment

    @property
    def _name(self) -> str:
        return f"CIFAR-{self.num_classes}"

    def _find_layout(self) -> str | None:
        if (self.data_dir / self._release.base_folder).is_dir():
            return "official"
        if (self.data_dir / "train").is_dir() or (self.data_dir / "test").is_dir():
            return "imagefolder"
        return None

    def _not_found(self) -> FileNotFoundError:
        files = [name for name, _ in self._release.train_list + self._release.test_list]
        files.append(self._release.meta["filename"])
        official = self.data_dir / self._release.base_folder
        remedy = "Place the data there in one of these layouts, or pass download=True (needs network)."
        if self.data_dir.name == self._release.base_folder:
            remedy += f" data_dir points at the batch folder itself: use its parent '{self.data_dir.parent}'."
        return data_not_found(
            f"{self._name} data",
            self.data_dir,
            [
                f"official python batches: {official}/{{{', '.join(files)}}}",
                f"ImageFolder tree: {self.data_dir / 'train'}/<class>/*.png|jpg and "
                f"{self.data_dir / 'test'}/<class>/*.png|jpg",
            ],
            remedy,
        )

    def prepare_data(self) -> None:
        """Download the official batches when ``download`` is set and no accepted layout is present."""
        if not self.download or self._find_layout() is not None:
            return
        release = self._release
        try:
            tv_utils.download_and_extract_archive(
                release.url, self.data_dir, filename=release.filename, md5=release.tgz_md5
            )
        # URLError and socket errors are OSErrors; torchvision raises RuntimeError on a bad checksum.
        except (OSError, RuntimeError) as err:
            raise RuntimeError(
                f"could not download {self._name} from {release.url} into data_dir='{self.data_dir}' "
                f"({type(err).__name__}: {err}). Without network, place the data under data_dir yourself, "
                f"either as the official python batches in '{self.data_dir / release.base_folder}' or as an "
                f"ImageFolder tree '{self.data_dir / 'train'}/<class>/*' + '{self.data_dir / 'test'}/<class>/*'; "
                "or run once with network access."
            ) from err

    def _load_split(self, train: bool) -> tuple[Dataset, Sequence[int]]:
        layout = self._find_layout()
        if layout is None:
            raise self._not_found()
        if layout == "official":
            folder = self.data_dir / self._release.base_folder
            missing = [name for name, _ in self._reader.train_list + self._reader.test_list]
            missing = [n for n in [*missing, self._reader.meta["filename"]] if not (folder / n).is_file()]
            if missing:
                raise FileNotFoundError(f"{self._name} batch folder '{folder}' lacks the files {missing}")
            dataset = self._reader(self.data_dir, train=train)
        else:
            split, other = ("train", "test") if train else ("test", "train")
            dataset = image_folder_split(self.data_dir, split, other, SizeCheckedLoader((32, 32), self._name))
        if len(dataset.classes) != self.num_classes:
            raise ValueError(
                f"{type(self).__name__} expects {self.num_classes} classes, but data_dir='{self.data_dir}' "
                f"({layout} layout) has {len(dataset.classes)}: {dataset.classes}"
            )
        self.classes = list(dataset.classes)
        return dataset, dataset.targets

    def export_info(self) -> dict[str, Any]:
        """What a network trained on this data needs to classify new images: the class names (those of the data
        read, once set up; else the official release's) and the evaluation transform (32x32 images, normalised
        with ``mean`` and ``std``)."""
        return {
            "class_names": list(self.classes or self.release_classes),
            "input_size": [32, 32],
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": 32,
            "crop": 32,
        }

    def _transforms(self) -> tuple[Callable, Callable]:
        evaluate = T.Compose([T.ToTensor(), T.Normalize(self.mean, self.std)])
        if not self.augment:
            return evaluate, evaluate
        train = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), evaluate])
        return train, evaluate


class CIFAR10DataModule(_CIFARDataModule):
    __doc__ = (
        "CIFAR-10: 10 classes, normalised with the paper's mean (0.4914, 0.4822, 0.4465) and "
        "std (0.2023, 0.1994, 0.2010).\n" + (_CIFARDataModule.__doc__ or "").split("\n", 1)[1]
    )

    num_classes = 10
    mean, std, release_classes = CIFAR10_MEAN, CIFAR10_STD, CIFAR10_CLASSES
    _release, _reader = CIFAR10, _CIFAR10Batches


class CIFAR100DataModule(_CIFARDataModule):
    __doc__ = (
        "CIFAR-100: 100 fine classes, normalised with CIFAR-100's usual mean (0.5071, 0.4865, 0.4409) and "
        "std (0.2673, 0.2564, 0.2762).\n" + (_CIFARDataModule.__doc__ or "").split("\n", 1)[1]
    )

    num_classes = 100
    mean, std, release_classes = CIFAR100_MEAN, CIFAR100_STD, CIFAR100_CLASSES
    _release, _reader = CIFAR100, _CIFAR100Batches
