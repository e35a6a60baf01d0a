"""The self-describing student.pt (format 2), old exports, Lightning checkpoints as students, and the data modules'
``export_info`` against their own evaluation transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pkkd_lightning import PKKDModule
from pkkd_lightning.callbacks import ExportStudent, export_student, load_exported_student
from pkkd_lightning.data import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, ImageNetDataModule
from pkkd_lightning.student_bundle import DATA_INFO_FIELDS, Preprocessing, load_student_bundle
from tests.integration.helpers import quiet_trainer, tiny_digits

FORMAT_2_FIELDS = {
    *("format_version", "arch", "layer_type", "num_classes", "keep", "state_dict", "class_names", "input_size"),
    *("in_chans", "mean", "std", "resize", "crop", "package_version", "hparams"),
}


@pytest.fixture(scope="module")
def digits_info() -> dict:
    return DigitsDataModule(image_size=8).export_info()


@pytest.fixture(scope="module")
def ann() -> PKKDModule:
    return PKKDModule("resnet20", 10, mode="ann").eval()


def _preprocessing(info: dict, in_chans: int = 3) -> Preprocessing:
    return Preprocessing(in_chans, tuple(info["mean"]), tuple(info["std"]), info["resize"], info["crop"])


def test_export_is_self_describing(tmp_path: Path, ann: PKKDModule, digits_info: dict) -> None:
    path = export_student(ann, tmp_path / "student.pt", digits_info, epochs=3)
    payload = torch.load(path, weights_only=False)
    assert set(payload) == FORMAT_2_FIELDS
    assert (payload["format_version"], payload["arch"], payload["layer_type"]) == (2, "resnet20", "adder")
    assert payload["num_classes"] == 10 and payload["keep"] == ["conv1", "fc"]  # the stem and the 1x1 classifier
    assert payload["class_names"] == [str(d) for d in range(10)]
    assert (payload["input_size"], payload["in_chans"], payload["resize"], payload["crop"]) == ([8, 8], 3, 8, 8)
    assert payload["mean"] == digits_info["mean"] and len(payload["std"]) == 3
    assert payload["hparams"] == {
        "mode": "ann", "init": "official", "feature_weight": 0.1, "beta": 0.5, "tau": 4.0, "lr": 0.1, "eta": 0.2,
        "epochs": 3,
    }  # fmt: skip
    assert payload["package_version"] == "0.1.0"
    bundle = load_student_bundle(path)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(bundle.model(x), ann.student(x))
    assert not bundle.model.training and bundle.class_names == payload["class_names"]
    assert bundle.preprocessing == _preprocessing(digits_info)
    assert bundle.label(3) == "3"


def test_export_without_data_info_records_none(tmp_path: Path, ann: PKKDModule) -> None:
    payload = torch.load(export_student(ann, tmp_path / "student.pt"), weights_only=False)
    assert all(payload[key] is None for key in DATA_INFO_FIELDS) and payload["hparams"]["epochs"] is None
    with pytest.raises(ValueError, match="missing"):
        export_student(ann, tmp_path / "bad.pt", {"class_names": None})


def test_old_format_export_still_loads(tmp_path: Path, ann: PKKDModule) -> None:
    path = tmp_path / "old_student.pt"
    old = {"arch": "resnet20", "layer_type": "adder", "num_classes": 10, "state_dict": ann.student_state_dict()}
    torch.save(old, path)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(load_exported_student(path)(x), ann.student(x))
    bundle = load_student_bundle(path)
    assert bundle.class_names is None and bundle.label(7) == "7"
    with pytest.raises(
        ValueError, match=r"old_student.pt records no preprocessing \(missing fields \['in_chans', 'mean'"
    ):
        bundle.preprocessing  # noqa: B018


def test_a_lightning_checkpoint_serves_as_a_student(tmp_path: Path, digits_info: dict) -> None:
    module = PKKDModule("resnet20", 10, mode="pkkd").eval()  # has a teacher: the student's weights must be picked
    checkpoint = {
        "pytorch-lightning_version": "2.6.0",
        "hyper_parameters": dict(module.hparams),
        "state_dict": module.state_dict(),
        "data_classes": [f"digit {d}" for d in range(10)],
    }
    torch.save({**checkpoint, "data_info": digits_info}, tmp_path / "run.ckpt")
    bundle = load_student_bundle(tmp_path / "run.ckpt")
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(bundle.model(x), module.student(x))
    assert bundle.class_names == checkpoint["data_classes"] and bundle.info["layer_type"] == "adder"
    assert bundle.preprocessing == _preprocessing(digits_info)
    torch.save(checkpoint, tmp_path / "older.ckpt")  # a checkpoint written before ExportStudent added data_info
    with pytest.raises(ValueError, match="records no preprocessing"):
        load_student_bundle(tmp_path / "older.ckpt").preprocessing  # noqa: B018


def test_files_that_are_no_student_are_refused(tmp_path: Path) -> None:
    torch.save({"arch": "resnet20"}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"not an exported student \(missing \['layer_type', 'num_classes'"):
        load_student_bundle(tmp_path / "partial.pt")
    torch.save({"pytorch-lightning_version": "2.6.0", "hyper_parameters": {}, "state_dict": {}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="not of a PKKD run"):
        load_student_bundle(tmp_path / "x.ckpt")
    with pytest.raises(FileNotFoundError):
        load_student_bundle(tmp_path / "missing.pt")


def test_digits_preprocessing_equals_the_data_module_on_real_images(tmp_path: Path) -> None:
    data = DigitsDataModule(image_size=8, channels=3, augment=False)
    data.setup("test")
    info = data.export_info()
    images, _ = next(iter(data.test_dataloader()))
    evaluate = data._transforms()[1]
    for i, image in enumerate(images[:8]):
        raw = data._splits[False].tensors[0][i]  # the un-normalised [0, 1] image
        path = tmp_path / f"{i}.png"
        Image.fromarray((raw[0].numpy() * 255).round().astype(np.uint8)).save(path)
        with Image.open(path) as pil:
            ours = _preprocessing(info)(pil)
        # The PNG holds 8-bit pixels: at most half a grey level (1/510) from the float image, scaled by 1/std.
        torch.testing.assert_close(ours, evaluate(raw), rtol=0, atol=0.5 / 255 / info["std"][0] + 1e-6)
        torch.testing.assert_close(evaluate(raw), image)


@pytest.mark.parametrize("module", [CIFAR10DataModule, CIFAR100DataModule])
def test_cifar_export_info_matches_its_eval_transform(tmp_path: Path, module: type) -> None:
    data = module(tmp_path)
    info = data.export_info()
    assert len(info["class_names"]) == data.num_classes and info["input_size"] == [32, 32]
    assert info["class_names"][:2] == (
        ["airplane", "automobile"] if data.num_classes == 10 else ["apple", "aquarium_fish"]
    )
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    torch.testing.assert_close(_preprocessing(info)(image), data._transforms()[1](image))
    data.classes = ["a"] * data.num_classes  # the classes of data read from disk win
    assert data.export_info()["class_names"] == data.classes


def test_imagenet_export_info_matches_its_eval_transform(tmp_path: Path) -> None:
    for wnid in ("n01", "n02"):
        (tmp_path / "train" / wnid).mkdir(parents=True)
    data = ImageNetDataModule(tmp_path, image_size=64, resize_size=73)
    info = data.export_info()
    assert info["class_names"] == ["n01", "n02"] and (info["resize"], info["crop"], info["input_size"]) == (
        73,
        64,
        [64, 64],
    )
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    torch.testing.assert_close(_preprocessing(info)(image), data._transforms()[1](image))
    assert ImageNetDataModule(tmp_path / "absent").export_info()["class_names"] is None


@pytest.mark.slow
def test_callback_exports_the_data_description_and_stores_it_in_checkpoints(tmp_path: Path) -> None:
    data = tiny_digits()
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        enable_checkpointing=True,
        default_root_dir=tmp_path,
        callbacks=[ExportStudent(dirpath=str(tmp_path))],
    )
    trainer.fit(PKKDModule("resnet20", 10, mode="ann"), datamodule=data)
    student = load_student_bundle(tmp_path / "student.pt")
    assert student.class_names == [str(d) for d in range(10)] and student.info["hparams"]["epochs"] == 1
    assert student.preprocessing == _preprocessing(data.export_info())
    (checkpoint,) = tmp_path.rglob("*.ckpt")
    assert torch.load(checkpoint, weights_only=False)["data_info"] == data.export_info()
    from_checkpoint = load_student_bundle(checkpoint)
    assert from_checkpoint.preprocessing == student.preprocessing
    assert from_checkpoint.class_names == student.class_names
