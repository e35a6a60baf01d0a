"""Fixtures for the DataModule tests: the shared CIFAR-10 JPEG copy and tiny data sets written on the fly.

The official CIFAR python batches are Python 2 pickles: dict keys, label names and the pixel buffer are Python 2
byte strings (which is why the CIFAR web page loads them with ``encoding="bytes"`` and gets ``b"data"``, while
torchvision loads them with ``encoding="latin1"`` and gets ``"data"``). ``write_py2_pickle`` writes the same
opcodes, so the fixtures load the way the real files do under both encodings.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cifar10-jpeg"


class _Py2Pickler(pickle._Pickler):
    """Pure-Python pickler writing ``str`` and ``bytes`` as Python 2 strings (SHORT_BINSTRING/BINSTRING)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_string(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_string
    dispatch[bytes] = _save_py2_string


def write_py2_pickle(path: Path, obj: object) -> None:
    """Write ``obj`` as a protocol-2 pickle with Python 2 strings, like the CIFAR release files."""
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def cifar_pixels(start: int, n: int) -> np.ndarray:
    """``n`` rows of 3072 uint8 values (R plane, G plane, B plane): image k has planes (k, k + 50, k + 100)."""
    k = np.arange(start, start + n)[:, None, None]
    planes = (k + np.array([0, 50, 100])[None, :, None]) % 256
    return np.broadcast_to(planes, (n, 3, 1024)).reshape(n, 3072).astype(np.uint8)


def cifar10_labels(start: int, n: int) -> list[int]:
    """Label of global image k is ``(3 k) % 10``: classes interleave across batches."""
    return [(3 * k) % 10 for k in range(start, start + n)]


def write_cifar10_batches(root: Path, per_batch: int = 20, test_size: int = 20) -> Path:
    """Write ``cifar-10-batches-py`` (5 training batches of ``per_batch`` images, one test batch) under root."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"class_{i}" for i in range(10)]  # not the real names: they must come from batches.meta
    write_py2_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch})
    splits = [(f"data_batch_{b + 1}", b * per_batch, per_batch) for b in range(5)]
    splits.append(("test_batch", 1000, test_size))
    for name, start, n in splits:
        write_py2_pickle(
            folder / name,
            {
                "batch_label": name,
                "labels": cifar10_labels(start, n),
                "data": cifar_pixels(start, n),
                "filenames": [f"img_{start + i}.png" for i in range(n)],
            },
        )
    return folder


def write_cifar100_python(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """Write ``cifar-100-python`` (``train``, ``test``, ``meta``) with classes in round-robin order."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = [f"fine_{i:02d}" for i in range(100)]
    write_py2_pickle(folder / "meta", {"fine_label_names": fine, "coarse_label_names": [f"c{i}" for i in range(20)]})
    for name, per_class, start in (("train", train_per_class, 0), ("test", test_per_class, 5000)):
        n = 100 * per_class
        labels = [k % 100 for k in range(n)]
        write_py2_pickle(
            folder / name,
            {
                "filenames": [f"img_{start + i}.png" for i in range(n)],
                "batch_label": name,
                "fine_labels": labels,
                "coarse_labels": [label // 5 for label in labels],
                "data": cifar_pixels(start, n),
            },
        )
    return folder


def write_image_tree(root: Path, classes: list[str], per_class: int, size: tuple[int, int] = (32, 32)) -> None:
    """Write ``root/<class>/NNNN.(png|jpg)`` random RGB images (alternating formats)."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:04d}.{'png' if i % 2 else 'jpg'}")


@pytest.fixture
def cifar10_jpeg() -> Path:
    """The shared CIFAR-10 JPEG ImageFolder copy (read-only); skips when this checkout has none."""
    if not (SHARED_CIFAR10 / "train").is_dir():
        pytest.skip(f"shared CIFAR-10 JPEG copy not found at {SHARED_CIFAR10}")
    return SHARED_CIFAR10


@pytest.fixture
def cifar10_batches(tmp_path: Path) -> Path:
    """A data_dir holding a tiny official-layout CIFAR-10 (5 x 20 training images, 20 test images)."""
    write_cifar10_batches(tmp_path / "cifar10")
    return tmp_path / "cifar10"


@pytest.fixture
def cifar100_python(tmp_path: Path) -> Path:
    """A data_dir holding a tiny official-layout CIFAR-100 (2 training and 1 test image per class)."""
    write_cifar100_python(tmp_path / "cifar100")
    return tmp_path / "cifar100"


@pytest.fixture
def image_tree():
    """The ImageFolder tree writer, ``image_tree(root, classes, per_class, size=(32, 32))``."""
    return write_image_tree


@pytest.fixture
def cifar_format() -> SimpleNamespace:
    """How the CIFAR fixtures are generated, for tests that check what the readers return."""
    return SimpleNamespace(pixels=cifar_pixels, cifar10_labels=cifar10_labels)
