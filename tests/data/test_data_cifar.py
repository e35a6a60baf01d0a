"""CIFAR-10/100 DataModules on the shared JPEG copy, on official-format fixtures, and their errors."""

from __future__ import annotations

import pickle
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from pkkd_lightning.data import CIFAR10DataModule, CIFAR100DataModule
from pkkd_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _dm(data_dir: Path, cls: type = CIFAR10DataModule, **kwargs) -> CIFAR10DataModule:
    return cls(data_dir, num_workers=0, pin_memory=False, **kwargs)


# --- ImageFolder layout: the shared CIFAR-10 JPEG copy --------------------------------------------------


def test_imagefolder_layout_shapes_labels_and_class_order(cifar10_jpeg):
    dm = _dm(cifar10_jpeg, train_per_class=5, test_per_class=3, batch_size=16, eval_batch_size=7)
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.classes == CIFAR10_CLASSES
    assert len(dm.train_set) == 50 and len(dm.test_set) == 30 and dm.val_set is dm.test_set
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    labels = torch.cat([batch[1] for batch in dm.val_dataloader()])
    assert labels.tolist() == [c for c in range(10) for _ in range(3)]  # unshuffled, class by class


def test_imagefolder_subsets_are_the_first_files_of_each_class(cifar10_jpeg):
    dm = _dm(cifar10_jpeg, train_per_class=5, test_per_class=2)
    dm.setup("fit")
    paths = [Path(dm.train_set.base.samples[i][0]) for i in dm.train_set.indices]
    expected = [
        cifar10_jpeg / "train" / c / name
        for c in CIFAR10_CLASSES
        for name in sorted(p.name for p in (cifar10_jpeg / "train" / c).iterdir())[:5]
    ]
    assert [p.resolve() for p in paths] == [p.resolve() for p in expected]
    again = _dm(cifar10_jpeg, train_per_class=5, test_per_class=2, seed=123)
    again.setup("fit")
    assert again.train_set.indices == dm.train_set.indices and again.test_set.indices == dm.test_set.indices


def test_augment_switch_and_deterministic_eval(cifar10_jpeg):
    augmented = _dm(cifar10_jpeg, train_per_class=1, test_per_class=1)
    augmented.setup("fit")
    torch.manual_seed(0)
    draws = [augmented.train_set[0][0] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(augmented.test_set[0][0], augmented.test_set[0][0])
    plain = _dm(cifar10_jpeg, train_per_class=1, test_per_class=1, augment=False)
    plain.setup("fit")
    x = plain.train_set[0][0]
    assert torch.equal(x, plain.train_set[0][0])
    # Normalised with the paper's statistics: undoing them gives pixels in [0, 1].
    pixels = x * torch.tensor(CIFAR10_STD)[:, None, None] + torch.tensor(CIFAR10_MEAN)[:, None, None]
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_val_split_is_seeded_disjoint_and_uses_eval_transform(cifar10_jpeg):
    def split(seed: int, val_split: int | float = 0.2) -> CIFAR10DataModule:
        dm = _dm(cifar10_jpeg, train_per_class=5, test_per_class=1, val_split=val_split, seed=seed)
        dm.setup("fit")
        return dm

    dm = split(seed=0)
    train, val = dm.train_set.indices, dm.val_set.indices
    assert len(train) == 40 and len(val) == 10 and set(train).isdisjoint(val)
    subset = _dm(cifar10_jpeg, train_per_class=5)
    subset.setup("fit")
    assert sorted(train + val) == subset.train_set.indices
    assert split(seed=0).val_set.indices == val
    assert split(seed=1).val_set.indices != val
    assert len(split(seed=0, val_split=3).val_set) == 3
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])
    assert dm.test_set is None  # fit with a carved-out val split needs no test split
    dm.setup("test")
    assert len(dm.test_set) == 10 and dm.val_set is not dm.test_set


def test_predict_loader_is_the_unshuffled_test_split(cifar10_jpeg):
    dm = _dm(cifar10_jpeg, test_per_class=2, batch_size=4)
    dm.setup("predict")
    assert dm.train_set is None
    first = torch.cat([x for x, _ in dm.predict_dataloader()])
    second = torch.cat([x for x, _ in dm.test_dataloader()])
    assert first.shape == (20, 3, 32, 32) and torch.equal(first, second)
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()


# --- official python batches ---------------------------------------------------------------------------------


def test_fixture_matches_the_release_pickle_format(cifar10_batches):
    with open(cifar10_batches / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # the CIFAR web page's loader
    assert {b"data", b"labels"} <= set(entry) and entry[b"data"].shape == (20, 3072)
    with open(cifar10_batches / "cifar-10-batches-py" / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"][0] == "class_0"  # torchvision's loader


def test_official_cifar10_reads_pixels_labels_and_class_names(cifar10_batches, cifar_format):
    dm = _dm(cifar10_batches, augment=False, train_per_class=3)
    dm.setup()
    assert dm.classes == [f"class_{i}" for i in range(10)]
    assert len(dm.train_set.base) == 100 and len(dm.test_set) == 20
    labels = cifar_format.cifar10_labels(0, 100)
    expected = [k for k in range(100) if sum(label == labels[k] for label in labels[:k]) < 3]
    assert dm.train_set.indices == expected and len(expected) == 30
    k = expected[-1]  # an image from the fifth batch
    x, y = dm.train_set[-1]
    assert y == labels[k]
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    planes = torch.tensor([(k + 50 * c) % 256 for c in range(3)]) / 255.0
    assert torch.allclose(x, ((planes - mean) / std)[:, None, None].expand(3, 32, 32), atol=1e-6)


def test_official_cifar100_layout(cifar100_python, cifar_format):
    dm = _dm(cifar100_python, CIFAR100DataModule, val_split=50)
    dm.setup()
    assert dm.num_classes == 100 and dm.classes[:2] == ["fine_00", "fine_01"]
    assert len(dm.train_set) == 150 and len(dm.val_set) == 50 and len(dm.test_set) == 100
    assert sorted({y for _, y in dm.test_set}) == list(range(100))
    x = dm.test_set[0][0]
    assert x.shape == (3, 32, 32)
    first_test_image = torch.from_numpy(cifar_format.pixels(5000, 1)).view(3, 1024)[:, 0] / 255.0
    expected = (first_test_image - torch.tensor(CIFAR100_MEAN)) / torch.tensor(CIFAR100_STD)
    assert torch.allclose(x[:, 0, 0], expected, atol=1e-6)


def test_official_folder_with_missing_files_is_reported(cifar10_batches):
    (cifar10_batches / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        _dm(cifar10_batches).setup("fit")


# --- errors ----------------------------------------------------------------------------------------------------


def test_missing_data_dir_names_path_layouts_and_download(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        _dm(missing).setup("fit")
    message = str(err.value)
    for part in (str(missing), "cifar-10-batches-py", "data_batch_1", "ImageFolder", "train", "test", "download"):
        assert part in message
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        _dm(missing, CIFAR100DataModule).setup("test")


def test_imagefolder_errors(tmp_path, image_tree):
    root = tmp_path / "cifar"
    classes = list(CIFAR10_CLASSES)
    image_tree(root / "train", classes, per_class=1)
    with pytest.raises(FileNotFoundError, match="test"):
        _dm(root).setup("fit")
    image_tree(root / "test", [*classes[:3], "kitten", *classes[4:]], per_class=1)
    with pytest.raises(ValueError, match=r"only in train/: \['cat'\], only in test/: \['kitten'\]"):
        _dm(root).setup("fit")
    three = tmp_path / "three"
    image_tree(three / "train", classes[:3], per_class=1)
    image_tree(three / "test", classes[:3], per_class=1)
    with pytest.raises(ValueError, match="expects 10 classes"):
        _dm(three).setup("fit")


class _NoNetwork:
    """Stands in for ``urllib.request.urlopen``: records calls and fails like a machine without network."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def __call__(self, request, *args, **kwargs):
        self.calls.append(request)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_download_failure_raises_clear_runtime_error(tmp_path, monkeypatch):
    no_network = _NoNetwork()
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    dm = _dm(tmp_path / "fresh", download=True)
    with pytest.raises(FileNotFoundError):
        dm.setup("fit")  # setup never downloads
    assert no_network.calls == []
    with pytest.raises(RuntimeError) as err:
        dm.prepare_data()
    assert no_network.calls and isinstance(err.value.__cause__, urllib.error.URLError)
    message = str(err.value)
    for part in ("could not download", str(tmp_path / "fresh"), "cifar-10-batches-py", "ImageFolder", "network"):
        assert part in message


def test_prepare_data_skips_download_when_data_is_present(cifar10_batches, tmp_path, image_tree, monkeypatch):
    no_network = _NoNetwork()
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    _dm(cifar10_batches, download=True).prepare_data()
    image_tree(tmp_path / "tree" / "train", CIFAR10_CLASSES[:1], per_class=1)
    _dm(tmp_path / "tree", download=True).prepare_data()
    _dm(Path("/nonexistent-cifar"), download=False).prepare_data()
    assert no_network.calls == []


def test_imagefolder_image_of_the_wrong_size_is_named_with_its_size(tmp_path, image_tree):
    root = tmp_path / "tree"
    image_tree(root / "train", CIFAR10_CLASSES, per_class=2)
    image_tree(root / "test", CIFAR10_CLASSES, per_class=1)
    stray = root / "train" / "cat" / "0001.png"
    Image.new("RGB", (40, 30)).save(stray)
    dm = _dm(root, batch_size=20, augment=False)
    dm.setup("fit")
    with pytest.raises(ValueError, match="40x30") as err:
        list(dm.train_dataloader())
    assert str(stray) in str(err.value) and "32x32" in str(err.value) and "CIFAR-10" in str(err.value)


def test_too_few_training_items_for_one_batch_fail_before_training(cifar10_batches):
    dm = _dm(cifar10_batches, train_per_class=2, batch_size=256)
    dm.setup("fit")
    with pytest.raises(ValueError, match="no training batch") as err:
        dm.train_dataloader()
    for part in ("20 items", "batch_size=256", "data.init_args.batch_size", "data.init_args.train_per_class"):
        assert part in str(err.value)
