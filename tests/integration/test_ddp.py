"""Two-process DDP on CPU equals one process with the same global batch (see ddp_worker.py for the set-up)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pkkd_lightning.data import DigitsDataModule

WORKER = Path(__file__).with_name("ddp_worker.py")
PRECISE_BN_WORKER = Path(__file__).with_name("precise_bn_ddp_worker.py")


def launch(worker: Path, devices: int, out: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(worker), "--devices", str(devices), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def run_worker(devices: int, out: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    launch(WORKER, devices, out)
    return torch.load(f"{out}.initial", weights_only=True), torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    initial, single = run_worker(1, tmp_path / "single.pt")
    initial_ddp, double = run_worker(2, tmp_path / "ddp.pt")
    assert single.keys() == double.keys()
    for key, value in initial.items():
        torch.testing.assert_close(initial_ddp[key], value, rtol=0, atol=0)
    for key, value in single.items():
        torch.testing.assert_close(double[key], value, rtol=1e-4, atol=1e-5, msg=f"{key} differs")
    weights = [k for k in single if k.endswith("conv1.weight") or k.endswith("conv2.weight")]
    moved = [k for k in weights if not torch.allclose(single[k], initial[k], atol=1e-4)]
    assert moved == weights  # training moved every conv and adder layer: the comparison is not vacuous


@pytest.mark.slow
def test_precise_batchnorm_pools_the_statistics_of_all_processes(tmp_path):
    launch(PRECISE_BN_WORKER, 1, tmp_path / "single.pt")
    launch(PRECISE_BN_WORKER, 2, tmp_path / "ddp.pt")
    single, double = (torch.load(tmp_path / name, weights_only=True) for name in ("single.pt", "ddp.pt"))
    # The first BatchNorm's input is the stem convolution of the first 2 x 16 training images, in order.
    data = DigitsDataModule(image_size=8, augment=False)
    data.setup("fit")
    images = torch.stack([data.train_set[i][0] for i in range(32)])
    stem = torch.nn.functional.conv2d(images.double(), single["conv1.weight"].double(), padding=1)
    values = stem.transpose(0, 1).flatten(1)
    expected = {"bn1.running_mean": values.mean(1), "bn1.running_var": values.var(1, unbiased=False)}
    for key, value in expected.items():
        torch.testing.assert_close(single[key].double(), value, rtol=1e-4, atol=1e-5, msg=f"{key}: one process")
        torch.testing.assert_close(double[key].double(), value, rtol=1e-4, atol=1e-5, msg=f"{key}: two processes")
