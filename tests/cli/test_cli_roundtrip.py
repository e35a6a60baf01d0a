"""``fit``, then ``test`` and ``predict`` from its checkpoint, each in a fresh process, on the embedded digits.

The demo config is run as users run it (``python cli.py <subcommand> --config configs/digits_pkkd.yaml``) with
overrides that make it tiny: one epoch of 3 batches on 8x8 images, a test split of 10 images per class, all
outputs under a temporary directory.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
import torch

from pkkd_lightning.callbacks import load_exported_student
from pkkd_lightning.data import DigitsDataModule

pytestmark = pytest.mark.slow

DEMO = "configs/digits_pkkd.yaml"
TEST_PER_CLASS = 10
TINY = [
    *("--data.init_args.image_size", "8", "--data.init_args.test_per_class", str(TEST_PER_CLASS)),
    *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
]
NETWORKS = ("student", "teacher")


def last_metrics(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of every column of a CSVLogger ``metrics.csv``."""
    values: dict[str, float] = {}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            values.update({key: float(value) for key, value in row.items() if value not in ("", None)})
    return values


def version_dir(root: Path, version: int | None = None) -> Path:
    """``root/version_<version>``, or the newest version folder when ``version`` is None."""
    if version is None:
        version = max(int(path.name.split("_")[1]) for path in root.glob("version_*"))
    path = root / f"version_{version}"
    assert path.is_dir(), f"expected a log folder {path}; found {sorted(p.name for p in root.iterdir())}"
    return path


@pytest.fixture(scope="module")
def fitted(run_cli, tmp_path_factory) -> Path:
    """The root directory of one tiny ``fit`` of the demo config (its ``test_after_fit`` runs too)."""
    root = tmp_path_factory.mktemp("digits_run")
    result = run_cli(
        "fit",
        "--config",
        DEMO,
        *TINY,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.default_root_dir",
        str(root),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return root


def test_fit_saves_checkpoints_exports_the_student_and_tests_after_fit(fitted: Path):
    run = version_dir(fitted, 0)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-epoch*.ckpt"))
    assert (run / "config.yaml").is_file()
    student = load_exported_student(run / "student.pt")
    assert student(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    metrics = last_metrics(run / "metrics.csv")
    for net in NETWORKS:  # test_after_fit: true in the demo config
        assert 0.0 <= metrics[f"test/{net}_acc1"] <= 1.0


def from_last_checkpoint(run_cli, fitted: Path, subcommand: str) -> subprocess.CompletedProcess:
    """Run ``subcommand`` on the fit's ``last.ckpt`` with Python's warnings on; check it succeeds without Lightning's
    warning that the checkpoint folder's paths are not reloaded (noise outside fit: nothing is saved)."""
    last = version_dir(fitted, 0) / "checkpoints" / "last.ckpt"
    root = ("--trainer.default_root_dir", str(fitted))
    result = run_cli(subcommand, "--config", DEMO, *TINY, *root, "--ckpt_path", str(last), warnings=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "dirpath has changed" not in result.stderr
    return result


def test_test_subcommand_reproduces_the_accuracy_in_a_fresh_process(fitted: Path, run_cli):
    result = from_last_checkpoint(run_cli, fitted, "test")
    assert "test/student_acc1" in result.stdout
    after_fit = last_metrics(version_dir(fitted, 0) / "metrics.csv")
    tested = last_metrics(version_dir(fitted) / "metrics.csv")
    for net in NETWORKS:
        # One epoch: the best checkpoint test_after_fit used and last.ckpt hold the same weights.
        assert tested[f"test/{net}_acc1"] == pytest.approx(after_fit[f"test/{net}_acc1"], abs=1e-6)


def test_predict_writes_one_row_per_test_sample(fitted: Path, run_cli):
    from_last_checkpoint(run_cli, fitted, "predict")
    written = sorted(fitted.glob("version_*/predictions.csv"))
    assert len(written) == 1, written
    with written[0].open() as f:
        rows = list(csv.DictReader(f))
    data = DigitsDataModule(image_size=8, test_per_class=TEST_PER_CLASS)
    data.setup("test")
    assert len(rows) == len(data.test_set)
    assert [int(row["index"]) for row in rows] == list(range(len(rows)))
    assert [int(row["target"]) for row in rows] == [int(y) for _, y in data.test_set]
    assert all(row["class"] == data.classes[int(row["prediction"])] for row in rows)  # the digits' class names
    assert not list(written[0].parent.glob("checkpoints/*.ckpt"))  # predicting copies no checkpoint
    accuracy = sum(row["prediction"] == row["target"] for row in rows) / len(rows)
    after_fit = last_metrics(version_dir(fitted, 0) / "metrics.csv")
    assert accuracy == pytest.approx(after_fit["test/student_acc1"], abs=1e-6)
