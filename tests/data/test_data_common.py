"""Shared pieces of the DataModules: per-class subsets, the validation split, argument checks, signatures."""

from __future__ import annotations

import pytest
from jsonargparse import ArgumentParser

from pkkd_lightning.data import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, ImageNetDataModule
from pkkd_lightning.data.common import SplitDataModule, first_per_class, split_train_val


def test_first_per_class_keeps_first_items_in_order():
    targets = [2, 0, 2, 1, 0, 2, 0, 1]
    assert first_per_class(targets, 2) == [0, 1, 2, 3, 4, 7]
    assert first_per_class(targets, 1) == [0, 1, 3]
    assert first_per_class(targets, 10) == list(range(8))
    assert first_per_class(targets, None) == list(range(8))


def test_split_train_val_is_seeded_disjoint_and_complete():
    indices = list(range(100, 150))
    train, val = split_train_val(indices, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert set(train).isdisjoint(val) and sorted(train + val) == indices
    assert split_train_val(indices, 0.2, seed=3) == (train, val)
    assert split_train_val(indices, 0.2, seed=4)[1] != val
    assert len(split_train_val(indices, 7, seed=0)[1]) == 7


@pytest.mark.parametrize("val_split", [50, 0.001])
def test_split_train_val_rejects_empty_sides(val_split):
    with pytest.raises(ValueError, match="val_split"):
        split_train_val(list(range(50)), val_split, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"train_per_class": 0}, "train_per_class"),
        ({"test_per_class": -2}, "test_per_class"),
        ({"val_split": -1}, "val_split"),
        ({"val_split": 1.0}, "val_split"),
        ({"val_split": True}, "val_split"),
        ({"seed": -1}, "seed"),
    ],
)
@pytest.mark.parametrize("cls", [CIFAR10DataModule, ImageNetDataModule, DigitsDataModule])
def test_loader_arguments_are_validated_at_construction(cls, kwargs, name, tmp_path):
    args = {} if cls is DigitsDataModule else {"data_dir": tmp_path}
    with pytest.raises(ValueError, match=f"`{name}` must be"):
        cls(**args, **kwargs)


@pytest.mark.parametrize(
    ("cls", "argv"),
    [
        (CIFAR10DataModule, ["--data.data_dir=/nonexistent", "--data.val_split=0.1"]),
        (CIFAR100DataModule, ["--data.data_dir=/nonexistent", "--data.val_split=500"]),
        (ImageNetDataModule, ["--data.data_dir=/nonexistent", "--data.timm_augment=rand-m9-mstd0.5"]),
        (DigitsDataModule, ["--data.image_size=16", "--data.train_per_class=5"]),
    ],
)
def test_signatures_resolve_with_jsonargparse(cls, argv):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    cfg = parser.parse_args(argv)
    dm = cls(**cfg.data.as_dict())
    assert isinstance(dm.num_classes, int) and dm.num_classes >= 10
    if "val_split" in cfg.data:
        assert type(cfg.data.val_split) is (float if cls is CIFAR10DataModule else int)  # fraction vs count
    with pytest.raises(Exception, match="batch_size"):
        parser.parse_args([*argv, "--data.batch_size=many"])


def test_a_subclass_must_declare_the_shared_options():
    class Incomplete(SplitDataModule):
        num_classes = 2

        def __init__(self, batch_size: int = 4) -> None:
            super().__init__()

        def _load_split(self, train): ...

        def _transforms(self): ...

    with pytest.raises(TypeError, match="Incomplete.__init__ must declare .*'train_per_class'"):
        Incomplete()
    dm = DigitsDataModule(batch_size=5, seed=3)  # the shared options are read from the subclass's arguments
    assert (dm.batch_size, dm.eval_batch_size, dm.seed, dm.num_workers) == (5, 5, 3, 0)
