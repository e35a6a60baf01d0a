"""ImageNet DataModule on a tiny ImageFolder tree of random JPEG/PNG images written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pkkd_lightning.data import ImageNetDataModule

WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture
def imagenet_dir(tmp_path: Path, image_tree) -> Path:
    root = tmp_path / "imagenet"
    image_tree(root / "train", WNIDS, per_class=4, size=(48, 40))
    image_tree(root / "val", WNIDS, per_class=2, size=(40, 48))
    return root


def _dm(data_dir: Path, **kwargs) -> ImageNetDataModule:
    return ImageNetDataModule(data_dir, num_workers=0, pin_memory=False, **kwargs)


def test_standard_transforms_shapes_and_classes(imagenet_dir):
    dm = _dm(imagenet_dir, batch_size=5)
    assert dm.num_classes == 3
    dm.setup("fit")
    assert dm.classes == WNIDS and len(dm.train_set) == 12 and len(dm.val_set) == 6
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 3, 224, 224) and y.min() >= 0 and y.max() <= 2
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])  # resize 256 + centre crop 224
    assert [y for _, y in dm.val_set] == [0, 0, 1, 1, 2, 2]


def test_subsets_val_split_and_small_crops(imagenet_dir):
    dm = _dm(imagenet_dir, image_size=32, resize_size=36, train_per_class=3, test_per_class=1, val_split=3)
    dm.setup()
    assert len(dm.train_set) == 6 and len(dm.val_set) == 3 and len(dm.test_set) == 3
    assert set(dm.train_set.indices).isdisjoint(dm.val_set.indices)
    assert sorted(dm.train_set.indices + dm.val_set.indices) == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert dm.test_set[0][0].shape == (3, 32, 32)
    plain = _dm(imagenet_dir, image_size=32, resize_size=36, augment=False, train_per_class=1)
    plain.setup("fit")
    assert torch.equal(plain.train_set[0][0], plain.train_set[0][0])


def test_timm_augment(imagenet_dir):
    dm = _dm(imagenet_dir, image_size=64, resize_size=72, timm_augment="rand-m9-mstd0.5", train_per_class=1)
    dm.setup("fit")
    assert dm.train_set[0][0].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="`timm_augment` must be"):
        _dm(imagenet_dir, timm_augment="bogus")


def test_errors_name_the_path(tmp_path, imagenet_dir, image_tree):
    missing = tmp_path / "nowhere"
    dm = _dm(missing)
    assert dm.num_classes == 1000
    with pytest.raises(FileNotFoundError, match="nowhere") as err:
        dm.setup("fit")
    assert "train" in str(err.value) and "val" in str(err.value)
    with pytest.raises(ValueError, match="resize_size"):
        _dm(imagenet_dir, image_size=224, resize_size=200)
    no_val = tmp_path / "no_val"
    image_tree(no_val / "train", WNIDS, per_class=1)
    with pytest.raises(FileNotFoundError, match=str(no_val / "val")):
        _dm(no_val).setup("fit")
    image_tree(no_val / "val", WNIDS[:2], per_class=1)
    with pytest.raises(ValueError, match=r"only in val/: \[\], only in train/: \['n01484850'\]"):
        _dm(no_val).setup("test")
