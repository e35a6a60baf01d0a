"""ImageFolderDataModule on tiny trees of random 40x30 JPEG/PNG images written in tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from jsonargparse import ArgumentParser
from PIL import Image
from torchvision import transforms as T

from pkkd_lightning.data import ImageFolderDataModule
from pkkd_lightning.data import imagefolder as imagefolder_module

CLASSES = ["cat", "dog", "fox"]
SIZE = 16


@pytest.fixture
def tree(tmp_path: Path, image_tree) -> Path:
    root = tmp_path / "tree"
    image_tree(root / "train", CLASSES, per_class=4, size=(40, 30))
    image_tree(root / "test", CLASSES, per_class=2, size=(30, 40))
    return root


def _dm(data_dir: str | Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(data_dir, **{"image_size": SIZE, "num_workers": 0, "pin_memory": False, **kwargs})


def _pixels(paths: list[Path], resize: int) -> torch.Tensor:
    """The images as evaluation sees them before normalisation, stacked."""
    geometry = T.Compose([T.Resize(resize), T.CenterCrop(SIZE), T.ToTensor()])
    return torch.stack([geometry(Image.open(p).convert("RGB")) for p in paths])


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_classes_num_classes_and_split_sizes(tree):
    dm = _dm(tree, batch_size=4)
    assert dm.num_classes == 3  # before setup: the CLI links it at instantiation
    dm.setup("fit")
    assert dm.classes == CLASSES and len(dm.train_set) == 12 and dm.val_set is dm.test_set and len(dm.test_set) == 6
    assert [y for _, y in dm.test_set] == [0, 0, 1, 1, 2, 2]
    carved = _dm(tree, val_split=3)
    carved.setup("fit")
    assert len(carved.train_set) == 9 and len(carved.val_set) == 3 and carved.test_set is None
    assert set(carved.train_set.indices).isdisjoint(carved.val_set.indices)


def test_a_val_folder_is_the_validation_split(tree, image_tree):
    image_tree(tree / "val", CLASSES, per_class=3, size=(40, 30))
    dm = _dm(tree, test_per_class=1)
    dm.setup("fit")
    assert len(dm.train_set) == 12 and len(dm.val_set) == 3 and len(dm.test_set) == 3
    assert Path(dm.val_set.base.root) == tree / "val" and dm.val_set.indices == [0, 3, 6]
    assert torch.cat([y for _, y in dm.val_dataloader()]).tolist() == [0, 1, 2]
    dm.setup("test")
    assert dm.val_set.base is dm._folder("val", "train") and Path(dm.test_set.base.root) == tree / "test"
    with pytest.raises(ValueError, match=f"`val_split`=2 .*'{tree / 'val'}'"):
        _dm(tree, val_split=2).setup("fit")


def test_per_class_subsets_are_the_first_files_of_each_class(tree):
    dm = _dm(tree, train_per_class=2, test_per_class=1)
    dm.setup()
    assert len(dm.train_set) == 6 and len(dm.test_set) == 3
    paths = [Path(dm.train_set.base.samples[i][0]) for i in dm.train_set.indices]
    assert paths == [tree / "train" / c / name for c in CLASSES for name in ("0000.jpg", "0001.png")]


@pytest.mark.parametrize(("augment", "resize"), [("cifar", SIZE), ("imagenet", 18), ("none", SIZE)])
def test_batches_shape_dtype_and_augmentation_per_preset(tree, augment, resize):
    dm = _dm(tree, augment=augment, batch_size=5, eval_batch_size=4)
    dm.setup("fit")
    assert dm.resize_size == resize
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 3, SIZE, SIZE) and x.dtype == torch.float32 and y.dtype == torch.int64
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, SIZE, SIZE) and x.dtype == torch.float32
    torch.manual_seed(0)
    draws = [dm.train_set[0][0] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:]) == (augment != "none")
    assert torch.equal(dm.test_set[0][0], dm.test_set[0][0])
    normalized = (_pixels([Path(dm.test_set.base.samples[0][0])], resize)[0] - _column(dm.mean)) / _column(dm.std)
    assert torch.allclose(dm.test_set[0][0], normalized, atol=1e-5)  # resize the shorter side, centre crop


def _column(values: list[float]) -> torch.Tensor:
    return torch.tensor(values)[:, None, None]


@pytest.mark.parametrize("augment", ["cifar", "imagenet"])
def test_computed_statistics_are_those_of_the_training_images(tree, augment):
    dm = _dm(tree, augment=augment, train_per_class=1)  # the statistics use all of train/, whatever the subset
    assert dm.mean is None and dm.state_dict() == {}
    dm.setup("test")  # the test stage needs them as well
    pixels = _pixels(_files(tree / "train"), dm.resize_size)
    assert torch.allclose(torch.tensor(dm.mean), pixels.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(torch.tensor(dm.std), pixels.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)
    evaluated = _dm(tree, augment="none")
    evaluated.setup("fit")
    normalized = torch.stack([evaluated.test_set.transform(evaluated.train_set.base[i][0]) for i in range(12)])
    assert torch.allclose(normalized.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(normalized.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)


def test_the_statistics_sample_is_seeded(tree, monkeypatch):
    monkeypatch.setattr(imagefolder_module, "STATS_IMAGES", 5)

    def statistics(seed: int) -> list[float]:
        dm = _dm(tree, seed=seed)
        dm.setup("test")
        return dm.mean

    order = torch.randperm(12, generator=torch.Generator().manual_seed(3))[:5].tolist()
    sample = [_files(tree / "train")[i] for i in sorted(order)]
    expected = _pixels(sample, 18).mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(statistics(3)), expected, atol=1e-6)
    assert statistics(3) == statistics(3) != statistics(4)


def test_given_statistics_are_used_as_they_are(tree, monkeypatch):
    monkeypatch.setattr(ImageFolderDataModule, "_training_statistics", None)  # never called
    mean, std = [0.25, 0.5, 0.75], [0.5, 0.25, 0.125]
    dm = _dm(tree, mean=mean, std=std, augment="none")
    dm.setup()
    assert dm.mean == mean and dm.std == std and dm.state_dict() == {"normalization": {"mean": mean, "std": std}}
    expected = (_pixels([Path(dm.test_set.base.samples[0][0])], SIZE)[0] - _column(mean)) / _column(std)
    assert torch.allclose(dm.test_set[0][0], expected, atol=1e-6)


def _retrained(tree: Path) -> Path:
    """A copy of the tree with one more (white) training image, so recomputed statistics differ."""
    copy = shutil.copytree(tree, tree.parent / "retrained")
    Image.new("RGB", (40, 30), "white").save(copy / "train" / "cat" / "0099.png")
    return copy


def test_the_normalisation_survives_state_dict_into_a_fresh_module(tree, monkeypatch):
    dm = _dm(tree, batch_size=4)
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    next(batches)
    state = dm.state_dict()
    assert state["normalization"] == {"mean": dm.mean, "std": dm.std} and state["train_position"]["samples"] == 4
    expected = dm.test_set[0][0]
    # Lightning's order with ckpt_path: setup (which computes statistics of the data as it is now), then restore.
    fresh = _dm(_retrained(tree))
    fresh.setup("test")
    assert fresh.mean != dm.mean and not torch.allclose(fresh.test_set[0][0], expected)
    fresh.load_state_dict(state)
    assert fresh.mean == dm.mean and fresh.std == dm.std and torch.equal(fresh.test_set[0][0], expected)
    assert fresh.export_info()["mean"] == dm.mean
    # Restored before setup, nothing is computed.
    monkeypatch.setattr(ImageFolderDataModule, "_training_statistics", None)
    restored = _dm(tree, batch_size=4)
    restored.load_state_dict(state)
    restored.setup("fit")
    assert torch.equal(restored.test_set[0][0], expected)
    assert len(list(restored.train_dataloader())) == 2  # the base's training position came along
    with pytest.raises(ValueError, match="differ from the checkpoint's"):
        _dm(tree, mean=[0.5] * 3, std=[0.5] * 3).load_state_dict(state)


class _TinyClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 3))
        self.tested: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def test_step(self, batch, batch_idx):
        self.tested.append(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_test_run_from_a_checkpoint_normalises_as_training_did(tree, tmp_path):
    def trainer() -> pl.Trainer:
        return pl.Trainer(
            max_epochs=1,
            limit_train_batches=1,
            limit_val_batches=0,
            accelerator="cpu",
            default_root_dir=tmp_path,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    # data_dir as a config gives it: a Path in the hyper-parameters would not load with weights_only=True.
    trained = _dm(str(tree), batch_size=4)
    fit = trainer()
    fit.fit(_TinyClassifier(), datamodule=trained)
    ckpt = fit.checkpoint_callback.best_model_path
    assert torch.load(ckpt, weights_only=False)["ImageFolderDataModule"]["normalization"]["mean"] == trained.mean
    model, data = _TinyClassifier(), _dm(str(_retrained(tree)))
    trainer().test(model, datamodule=data, ckpt_path=ckpt, verbose=False)
    assert data.mean == trained.mean and data.std == trained.std
    assert torch.equal(model.tested[0][0], trained.test_set[0][0])


def test_export_info(tree):
    dm = _dm(tree, augment="imagenet")
    with pytest.raises(RuntimeError, match="setup"):
        dm.export_info()
    dm.setup("test")
    assert dm.export_info() == {
        "class_names": CLASSES,
        "input_size": [SIZE, SIZE],
        "mean": dm.mean,
        "std": dm.std,
        "resize": 18,
        "crop": SIZE,
    }
    given = _dm(tree, augment="cifar", mean=[0.5] * 3, std=[0.2] * 3).export_info()
    assert (given["resize"], given["crop"], given["mean"], given["std"]) == (SIZE, SIZE, [0.5] * 3, [0.2] * 3)


def test_missing_data_dir_names_path_and_layout(tmp_path):
    missing = tmp_path / "nowhere"
    for step in (lambda: _dm(missing).num_classes, lambda: _dm(missing).setup("fit")):
        with pytest.raises(FileNotFoundError) as err:
            step()
        for part in (str(missing), str(missing / "train"), str(missing / "test"), str(missing / "val"), ".jpg"):
            assert part in str(err.value)


def test_missing_splits_empty_and_differing_class_folders_name_the_path(tmp_path, image_tree):
    root = tmp_path / "tree"
    image_tree(root / "test", CLASSES, per_class=1)
    with pytest.raises(FileNotFoundError, match=str(root / "train")):
        _ = _dm(root).num_classes
    image_tree(root / "train", CLASSES, per_class=1)
    (root / "test").rename(root / "elsewhere")
    with pytest.raises(FileNotFoundError, match=str(root / "test")):
        _dm(root).setup("fit")
    image_tree(root / "test", [*CLASSES[:2], "owl"], per_class=1)
    with pytest.raises(ValueError, match=rf"'{root / 'train'}' and '{root / 'test'}': only in train/: \['fox'\]"):
        _dm(root).setup("fit")
    (root / "test" / "owl").rename(root / "test" / "fox")
    (root / "train" / "emu").mkdir()
    (root / "train" / "emu" / "notes.txt").write_text("not an image")
    image_tree(root / "test", ["emu"], per_class=1)
    with pytest.raises(FileNotFoundError, match=rf"without images: '{root / 'train' / 'emu'}'.*\.png"):
        _dm(root, mean=[0.5] * 3, std=[0.5] * 3).setup("fit")


def test_an_unreadable_image_is_named(tree):
    broken = tree / "train" / "dog" / "0001.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=f"cannot read image '{broken}'"):
        _dm(tree).setup("fit")  # while computing the statistics
    dm = _dm(tree, mean=[0.5] * 3, std=[0.5] * 3, batch_size=12)
    dm.setup("fit")
    with pytest.raises(ValueError, match=f"cannot read image '{broken}'"):
        next(iter(dm.train_dataloader()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 0}, "`image_size` must be"),
        ({"augment": "autoaugment"}, "`augment` must be one of 'cifar', 'imagenet', 'none'"),
        ({"mean": [0.5] * 3}, "`mean` and `std` must be given together"),
        ({"mean": [0.5] * 2, "std": [0.5] * 3}, "`mean` must be a list of 3 numbers"),
        ({"mean": [0.5] * 3, "std": [0.5, 0.0, 0.5]}, r"`std` must be a finite number in \(0.0, inf\]"),
    ],
)
def test_arguments_are_validated_at_construction(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _dm(tmp_path, **kwargs)


def test_signature_resolves_with_jsonargparse(tree):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageFolderDataModule, "data")
    cfg = parser.parse_args([f"--data.data_dir={tree}", "--data.mean=[0.5, 0.5, 0.5]", "--data.std=[1, 1, 1]"])
    dm = ImageFolderDataModule(**cfg.data.as_dict())
    assert dm.num_classes == 3 and dm.std == [1.0, 1.0, 1.0] and dm.augment == "imagenet"
    with pytest.raises(Exception, match="augment"):
        parser.parse_args([f"--data.data_dir={tree}", "--data.augment=bogus"])


def _batches(tree: Path, seed: str, monkeypatch) -> list:
    monkeypatch.setenv("PL_GLOBAL_SEED", seed)
    dm = _dm(tree, augment="imagenet", batch_size=4)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1, accumulate_grad_batches=1)
    dm.setup("fit")
    return list(dm.train_dataloader())


def test_the_training_stream_follows_the_run_seed_not_the_global_generator(tree, monkeypatch):
    torch.manual_seed(0)
    first = _batches(tree, "0", monkeypatch)
    torch.manual_seed(1)
    again = _batches(tree, "0", monkeypatch)
    other = _batches(tree, "1", monkeypatch)
    assert len(first) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])
