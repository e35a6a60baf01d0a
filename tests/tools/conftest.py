"""Fixtures for the tools' tests: a small exported student, real digit images, and the CLI runner of tests/cli."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from pkkd_lightning import PKKDModule
from pkkd_lightning.callbacks import export_student
from pkkd_lightning.data import DigitsDataModule
from tests.cli.conftest import run_cli  # noqa: F401 - the fixture, shared with the command-line tests


def write_digit_images(folder: Path, count: int, suffix: str = ".png") -> list[Path]:
    """Save the first ``count`` scikit-learn digits as 8-bit greyscale images ``<index>_<label><suffix>``."""
    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}_{digits.target[index]}{suffix}"
        Image.fromarray((digits.images[index] / 16 * 255).round().astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def ann_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ResNet-20 AdderNet student exported with the 8x8 digits' description; its BatchNorm statistics
    are those of the digits, so that its logits are of a trained network's scale."""
    data = DigitsDataModule(image_size=8, augment=False, batch_size=256)
    data.setup("fit")
    module = PKKDModule("resnet20", 10, mode="ann")
    with torch.no_grad():
        for _ in range(3):
            for images, _ in data.train_dataloader():
                module.student(images)
    path = tmp_path_factory.mktemp("student") / "student.pt"
    return export_student(module.eval(), path, data.export_info())
