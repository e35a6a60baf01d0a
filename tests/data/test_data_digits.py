"""The embedded digits DataModule: sizes, channels, the stratified split, normalisation and a Trainer run."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pkkd_lightning.data import DigitsDataModule


def _labels(dataset) -> list[int]:
    return [int(y) for _, y in dataset]


def test_default_split_sizes_shapes_and_stratification():
    dm = DigitsDataModule(augment=False)
    dm.setup()
    assert len(dm.train_set) + len(dm.test_set) == 1797 and len(dm.test_set) == 360
    assert dm.val_set is dm.test_set and dm.classes == [str(d) for d in range(10)] and dm.num_classes == 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (128, 3, 32, 32) and y.dtype == torch.long and y.min() >= 0 and y.max() <= 9
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # repeated grey channel
    train, test = Counter(_labels(dm.train_set)), Counter(_labels(dm.test_set))
    for digit in range(10):
        assert abs(test[digit] - 0.2 * (train[digit] + test[digit])) <= 1
    pixels = torch.stack([x for x, _ in dm.train_set])
    assert abs(pixels.mean().item()) < 1e-3 and abs(pixels.std().item() - 1) < 1e-3


@pytest.mark.parametrize(("image_size", "channels"), [(8, 1), (16, 3), (28, 2)])
def test_image_size_and_channels(image_size, channels):
    dm = DigitsDataModule(image_size=image_size, channels=channels, test_per_class=2)
    dm.setup("test")
    assert dm.train_set is None and len(dm.test_set) == 20
    assert dm.test_set[0][0].shape == (channels, image_size, image_size)


def test_split_and_subsets_are_deterministic():
    def test_images(**kwargs) -> torch.Tensor:
        dm = DigitsDataModule(augment=False, **kwargs)
        dm.setup("test")
        return torch.stack([x for x, _ in dm.test_set])

    assert torch.equal(test_images(split_seed=0), test_images(split_seed=0))
    assert not torch.equal(test_images(split_seed=0), test_images(split_seed=1))
    assert len(test_images(test_fraction=0.5)) == 899
    dm = DigitsDataModule(train_per_class=4, val_split=0.25, seed=5)
    dm.setup("fit")
    again = DigitsDataModule(train_per_class=4, val_split=0.25, seed=5)
    again.setup("fit")
    assert len(dm.train_set) == 30 and len(dm.val_set) == 10
    assert dm.val_set.indices == again.val_set.indices
    assert set(dm.val_set.indices).isdisjoint(dm.train_set.indices)


def test_augment_switch():
    torch.manual_seed(0)
    dm = DigitsDataModule(train_per_class=1)
    dm.setup("fit")
    draws = [dm.train_set[0][0] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(dm.test_set[0][0], dm.test_set[0][0])
    plain = DigitsDataModule(train_per_class=1, augment=False)
    plain.setup("fit")
    assert torch.equal(plain.train_set[0][0], plain.train_set[0][0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image_size": 4}, "image_size"),
        ({"channels": 0}, "channels"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1}, "test_fraction"),
        ({"split_seed": -1}, "split_seed"),
    ],
)
def test_arguments_are_validated(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be"):
        DigitsDataModule(**kwargs)


class _TinyClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        return self.net(batch[0]).argmax(1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_fit_test_predict(tmp_path):
    dm = DigitsDataModule(image_size=16, batch_size=32, test_per_class=3)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        accelerator="cpu",
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = _TinyClassifier()
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3
    assert "val_loss" in trainer.test(model, datamodule=dm, verbose=False)[0]
    predictions = torch.cat(trainer.predict(model, datamodule=dm))
    assert predictions.shape == (30,)


def test_validate_stage_builds_only_what_it_needs():
    dm = DigitsDataModule()
    dm.setup("validate")
    assert dm.train_set is None and dm.val_set is dm.test_set is not None
    carved = DigitsDataModule(val_split=100)
    carved.setup("validate")
    assert len(carved.val_set) == 100 and carved.test_set is None


def test_too_few_training_items_for_one_step_name_world_size_and_val_split():
    dm = DigitsDataModule(train_per_class=4, val_split=10, batch_size=16)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=2, accumulate_grad_batches=1)
    dm.setup("fit")
    with pytest.raises(ValueError, match="no training batch") as err:
        dm.train_dataloader()
    for part in ("30 items", "val_split=10 took 10", "batch_size=16 x 2 process(es)", "train_per_class (now 4)"):
        assert part in str(err.value)


def test_the_training_position_is_saved_and_restored_through_the_datamodule():
    dm = DigitsDataModule(image_size=8, train_per_class=5, batch_size=4)
    assert dm.state_dict() == {}  # nothing to save before a training loader exists
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    batches = iter(loader)
    for _ in range(5):
        next(batches)
    state = dm.state_dict()
    assert state == {"train_position": {"epoch": 1, "samples": 20, "seed": loader.sampler.seed, "dataset_size": 50}}
    rest = list(batches)
    resumed = DigitsDataModule(image_size=8, train_per_class=5, batch_size=4)
    resumed.load_state_dict(state)
    resumed.setup("fit")
    again = list(resumed.train_dataloader())
    assert len(again) == len(rest) == 7 and all(torch.equal(a[0], b[0]) for a, b in zip(again, rest))
    assert len(list(resumed.train_dataloader())) == 12  # the position is applied to one loader only
