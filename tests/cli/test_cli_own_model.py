"""Your own network and data through ``cli.py``: a timm ResNet, a depthwise timm network and your own factory,
trained with PKKD on an image-folder tree (``configs/imagefolder_pkkd.yaml``), tested from the checkpoint, under
DDP too."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pkkd_lightning.network_io import read_checkpoint
from tests.cli.conftest import REPO_ROOT
from tests.cli.test_cli_roundtrip import last_metrics
from tests.data.conftest import write_image_tree

pytestmark = pytest.mark.slow

CONFIG = "configs/imagefolder_pkkd.yaml"
CLASSES = ["cat", "dog", "owl"]
FACTORY = """
import torch.nn as nn


def small_net(num_classes):
    def block(c_in, c_out, stride, groups=1):
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(3, 8, 1), *block(8, 8, 1, groups=8), *block(8, 16, 2), *block(16, 16, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
"""


@pytest.fixture(scope="module")
def my_data(tmp_path_factory) -> Path:
    """``my_data/{train,test}/<class>/*`` of random 40x30 images: 3 classes, 12 training and 4 test images each."""
    root = tmp_path_factory.mktemp("my_data")
    write_image_tree(root / "train", CLASSES, per_class=12, size=(40, 30))
    write_image_tree(root / "test", CLASSES, per_class=4, size=(40, 30))
    return root


def fit_args(data: Path, root: Path, arch: str) -> list[str]:
    return [
        "fit", "--config", str(REPO_ROOT / CONFIG), "--model.arch", arch, "--data.init_args.data_dir", str(data),
        "--data.init_args.image_size", "32", "--data.init_args.batch_size", "8", "--data.init_args.num_workers", "0",
        "--trainer.max_epochs", "1", "--test_after_fit", "true", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
    ]  # fmt: skip


def run_in(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python <repo>/cli.py *args`` from ``cwd``, as a user runs it from their own project folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # warnings shown, as users see them
    command = [sys.executable, str(REPO_ROOT / "cli.py"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def check_fitted_and_tested(result: subprocess.CompletedProcess, root: Path, cwd: Path, data: Path) -> None:
    assert result.returncode == 0, result.stderr[-4000:]
    assert "PKKD distillation points" in result.stderr
    run = root / "version_0"
    metrics = last_metrics(run / "metrics.csv")
    assert 0 <= metrics["test/student_acc1"] <= 1 and 0 <= metrics["test/teacher_acc1"] <= 1
    last = run / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["data_classes"] == CLASSES
    tested = run_in(cwd, "test", "--config", str(REPO_ROOT / CONFIG), "--data.init_args.data_dir", str(data),
                    "--data.init_args.image_size", "32", "--trainer.accelerator", "cpu", "--ckpt_path", str(last),
                    "--trainer.default_root_dir", str(root / "test"), "--trainer.enable_progress_bar", "false",
                    *arch_of(last))  # fmt: skip
    assert tested.returncode == 0, tested.stderr[-4000:]
    assert "test/student_acc1" in tested.stdout
    student = torch.load(run / "student.pt", weights_only=False)
    assert student["class_names"] == CLASSES and student["input_size"] == [32, 32]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pkkd_lightning.tools.op_counter", "--model", str(run / "student.pt")]
    counted = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert counted.returncode == 0, counted.stderr[-3000:]
    assert "adder" in counted.stdout


def arch_of(checkpoint: Path) -> list[str]:
    return ["--model.arch", read_checkpoint(checkpoint)["hyper_parameters"]["arch"]]


@pytest.mark.parametrize("arch", ["timm:resnet10t", "timm:mobilenetv3_small_050"])
def test_a_timm_network_trains_with_pkkd_on_an_image_folder_and_tests(arch: str, my_data: Path, tmp_path: Path):
    result = run_in(REPO_ROOT, *fit_args(my_data, tmp_path, arch))
    check_fitted_and_tested(result, tmp_path, REPO_ROOT, my_data)
    if arch.endswith("mobilenetv3_small_050"):  # squeeze-excitation convolutions have no BatchNorm after them
        assert "have no BatchNorm right after them" in result.stderr and "model.keep" in result.stderr


def test_your_own_factory_trains_from_your_working_directory(my_data: Path, tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_nets.py").write_text(FACTORY)
    result = run_in(project, *fit_args(my_data, tmp_path / "runs", "my_nets:small_net"))
    check_fitted_and_tested(result, tmp_path / "runs", project, my_data)
    state = torch.load(tmp_path / "runs" / "version_0" / "student.pt", weights_only=False)["state_dict"]
    assert state["3.weight"].shape == (8, 1, 3, 3)  # the depthwise layer, an adder layer in the student
    last = tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt"
    predicted = run_in(project, "predict", "--config", str(REPO_ROOT / CONFIG), "--data.init_args.data_dir",
                       str(my_data), "--data.init_args.image_size", "32", "--trainer.accelerator", "cpu",
                       "--model.arch", "my_nets:small_net", "--ckpt_path", str(last),
                       "--trainer.default_root_dir", str(tmp_path / "predict"))  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with (tmp_path / "predict" / "version_0" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and rows[0]["path"] == str(my_data / "test" / "cat" / "0000.jpg")
    assert all(row["class"] == CLASSES[int(row["prediction"])] for row in rows)


def test_an_unknown_architecture_is_refused_before_training_with_close_matches(my_data: Path, tmp_path: Path):
    result = run_in(REPO_ROOT, *fit_args(my_data, tmp_path, "timm:mobilenetv3_smal_050"))
    assert result.returncode != 0 and "timm:mobilenetv3_small_050" in result.stderr
    assert not list(tmp_path.glob("version_*"))


def test_a_timm_network_trains_under_two_process_ddp(my_data: Path, tmp_path: Path):
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    result = run_in(REPO_ROOT, *fit_args(my_data, tmp_path, "timm:resnet10t"), *ddp, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "test/student_acc1" in result.stdout
    assert (tmp_path / "version_0" / "student.pt").is_file() and not list(tmp_path.glob("version_1"))
