"""Exact resume through the real command line, on the embedded digits config made tiny.

A ``fit`` stopped by SIGTERM in the middle of an epoch and resumed from its ``preempted.ckpt``, and one resumed
from an epoch-end ``last.ckpt``, end with exactly the weights, optimiser and scheduler state, loss weight
(``beta``) and step of the uninterrupted fit, and log exactly its values at every step. Each fit runs in a fresh
``python cli.py`` process with one CPU thread (fast on busy cores, and the same reductions in every run).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 5  # 180 training digits (20 per class, 10% carved out for validation) in batches of 32
TINY = [
    "--config",
    "configs/digits_pkkd.yaml",
    "--data.init_args.image_size",
    "8",
    "--data.init_args.train_per_class",
    "20",
    "--data.init_args.test_per_class",
    "5",
    "--data.init_args.batch_size",
    "32",
    "--trainer.max_epochs",
    "2",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.log_every_n_steps",
    "1",
    "--model.grad_share_every_n_steps",
    "0",
    "--test_after_fit",
    "false",
]


def fit(root: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python cli.py fit`` on the tiny digits config, writing under ``root``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "cli.py", "fit", *TINY, "--trainer.default_root_dir", str(root), *extra]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def logged(run: Path) -> dict[int, dict[str, str]]:
    """Every value in a run's ``metrics.csv``, by step."""
    by_step: dict[int, dict[str, str]] = {}
    with open(run / "metrics.csv") as f:
        for row in csv.DictReader(f):
            by_step.setdefault(int(row["step"]), {}).update({k: v for k, v in row.items() if v})
    return by_step


def continued(before: Path, after: Path, resumed_at: int) -> dict[int, dict[str, str]]:
    """The log of an interrupted run up to the checkpoint's step, continued by the resumed run's."""
    return {**{step: v for step, v in logged(before).items() if step < resumed_at}, **logged(after)}


def assert_identical(got: Any, expected: Any, where: str) -> None:
    """Equal nested dicts/lists, with tensors equal bit for bit (rtol 0, atol 0)."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(got, expected), f"{where} differs"
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key, value in expected.items():
            assert_identical(got[key], value, f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for index, value in enumerate(expected):
            assert_identical(got[index], value, f"{where}[{index}]")
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def assert_same_end(resumed: Path, reference: Path) -> None:
    """The final checkpoints hold the same step, epoch, weights, optimiser, scheduler and callback states."""
    got, expected = load(resumed / "checkpoints" / "last.ckpt"), load(reference / "checkpoints" / "last.ckpt")
    end = (2 * STEPS_PER_EPOCH, 1)  # (global_step, epoch) after 2 epochs
    assert (got["global_step"], got["epoch"]) == (expected["global_step"], expected["epoch"]) == end
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "DigitsDataModule"):
        assert_identical(got[key], expected[key], key)
    beta = "LossWeightSchedule{'name': 'beta'}"
    assert got["callbacks"][beta] == expected["callbacks"][beta] == {"current": 0.5}


def assert_same_log(resumed: dict[int, dict[str, str]], reference: dict[int, dict[str, str]]) -> None:
    """Loss terms, ``train/beta`` and learning rates (and validation metrics) equal at every step."""
    assert sorted(resumed) == sorted(reference) == list(range(2 * STEPS_PER_EPOCH))
    for step, values in reference.items():
        assert {"train/loss", "train/beta", "lr-SGD/student"} <= values.keys()
        assert resumed[step] == values, f"step {step}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    result = fit(root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "version_0"


@pytest.fixture(scope="module")
def preempted_at(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """``preempted_at(step)``: the run directory of a fit that received SIGTERM after ``step`` steps."""
    runs: dict[int, Path] = {}

    def run(step: int) -> Path:
        if step not in runs:
            root = tmp_path_factory.mktemp(f"preempted_at_{step}")
            callback = ["--trainer.callbacks+=tests.integration.resume_callbacks.SigtermAtStep"]
            result = fit(root, *callback, "--trainer.callbacks.step", str(step))
            checkpoint = root / "version_0" / "checkpoints" / "preempted.ckpt"
            assert checkpoint.is_file(), result.stderr[-3000:]
            runs[step] = root / "version_0"
        return runs[step]

    return run


def resume(run: Path, checkpoint: str, root: Path) -> Path:
    result = fit(root, "--ckpt_path", str(run / "checkpoints" / checkpoint))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "version_0"


@pytest.mark.slow
@pytest.mark.parametrize("step", [3, 8], ids=["first-epoch", "second-epoch"])
def test_a_fit_preempted_mid_epoch_resumes_exactly(step, uninterrupted, preempted_at, tmp_path):
    run = preempted_at(step)
    assert load(run / "checkpoints" / "preempted.ckpt")["global_step"] == step
    resumed = resume(run, "preempted.ckpt", tmp_path)
    assert_same_end(resumed, uninterrupted)
    assert_same_log(continued(run, resumed, step), logged(uninterrupted))


@pytest.mark.slow
def test_a_fit_resumed_from_an_epoch_end_checkpoint_ends_exactly_the_same(uninterrupted, preempted_at, tmp_path):
    run = preempted_at(8)
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == STEPS_PER_EPOCH
    resumed = resume(run, "last.ckpt", tmp_path)
    assert_same_end(resumed, uninterrupted)
    assert_same_log(continued(run, resumed, STEPS_PER_EPOCH), logged(uninterrupted))
