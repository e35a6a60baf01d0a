"""DDP through ``cli.py`` as users run it (2 CPU processes, gloo): every subcommand ends by itself.

Each run has a timeout: a process left waiting in a collective (the bug of rank-zero-only code calling
``Trainer.log_dir``) fails the test instead of hanging the suite.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from pkkd_lightning import PKKDModule
from pkkd_lightning.callbacks import load_exported_student
from tests.cli.test_cli_roundtrip import last_metrics

pytestmark = pytest.mark.slow

DEMO = "configs/digits_pkkd.yaml"
TINY = (
    *("--data.init_args.image_size", "8", "--data.init_args.train_per_class", "16"),
    *("--data.init_args.test_per_class", "4", "--data.init_args.batch_size", "16"),
    *("--trainer.enable_progress_bar", "false", "--model.grad_share_every_n_steps", "0"),
)
DDP = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")


def run_ddp(run_cli, *args: str):
    return run_cli(*args, timeout=420, threads=1)


@pytest.fixture(scope="module")
def ddp_fit(run_cli, tmp_path_factory) -> Path:
    """One 2-process ``fit`` with the demo's ``test_after_fit: true``."""
    root = tmp_path_factory.mktemp("ddp_fit")
    result = run_ddp(run_cli, "fit", "--config", DEMO, *TINY, *DDP, "--trainer.max_epochs", "1",
                     "--trainer.default_root_dir", str(root))  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "test/student_acc1" in result.stdout
    return root


def test_fit_with_test_after_fit_ends_exports_the_student_and_logs_the_test(ddp_fit: Path):
    run = ddp_fit / "version_0"
    assert load_exported_student(run / "student.pt")(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    metrics = last_metrics(run / "metrics.csv")
    assert 0.0 <= metrics["test/student_acc1"] <= 1.0 and 0.0 <= metrics["test/teacher_acc1"] <= 1.0
    assert not list(ddp_fit.glob("version_1"))  # one run, one folder, whatever the number of processes


def test_fit_without_test_after_fit_ends_and_exports(run_cli, tmp_path: Path):
    result = run_ddp(run_cli, "fit", "--config", DEMO, *TINY, *DDP, "--trainer.max_epochs", "1",
                     "--test_after_fit", "false", "--trainer.default_root_dir", str(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "version_0" / "student.pt").is_file()


def test_test_and_predict_under_ddp_end_and_cover_the_test_split(run_cli, ddp_fit: Path, tmp_path: Path):
    last = ddp_fit / "version_0" / "checkpoints" / "last.ckpt"
    common = ("--config", DEMO, *TINY, *DDP, "--ckpt_path", str(last), "--trainer.default_root_dir", str(tmp_path))
    tested = run_ddp(run_cli, "test", *common)
    assert tested.returncode == 0, tested.stderr[-4000:]
    assert 0.0 <= last_metrics(tmp_path / "version_0" / "metrics.csv")["test/student_acc1"] <= 1.0
    predicted = run_ddp(run_cli, "predict", *common)
    assert predicted.returncode == 0, predicted.stderr[-4000:]
    files = sorted(tmp_path.glob("version_*/predictions_rank*.csv"))
    assert [f.name for f in files] == ["predictions_rank0.csv", "predictions_rank1.csv"]
    rows = sum(len(f.read_text().splitlines()) - 1 for f in files)
    assert rows == 40  # 4 test images per class; DistributedSampler pads only when the split does not divide


def test_two_processes_train_like_one_with_the_same_global_batch(run_cli, tmp_path: Path):
    """2 processes x batch 8 against 1 process x batch 8 with ``accumulate_grad_batches 2``: every step sees the same
    micro-batches with the same augmentation (BatchNorm statistics included: each micro-batch is one process's batch),
    DDP averages the gradients that accumulation sums, and AdderNet's rescaling acts on the complete gradient. The
    kernels' scales are fixed: a running-mean sigma is averaged over processes once per step but updated after
    every micro-batch under accumulation (docs/method.md)."""
    common = (
        *("fit", "--config", DEMO, *TINY, "--data.init_args.batch_size", "8", "--trainer.max_steps", "4"),
        *("--test_after_fit", "false", "--export.use_best", "false"),
        *("--model.sigma_ann", "50.0", "--model.sigma_cnn", "5.0", "--trainer.accelerator", "cpu"),
    )
    one = run_ddp(run_cli, *common, "--trainer.accumulate_grad_batches", "2",
                  "--trainer.default_root_dir", str(tmp_path / "one"))  # fmt: skip
    assert one.returncode == 0, one.stderr[-4000:]
    two = run_ddp(run_cli, *common, *DDP[2:], "--trainer.default_root_dir", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-4000:]
    single, double = (torch.load(tmp_path / r / "version_0" / "student.pt")["state_dict"] for r in ("one", "two"))
    L.seed_everything(0, verbose=False)  # the CLI's default seed: the networks both runs started from
    initial = PKKDModule("resnet20", 10).student.state_dict()
    trained = [k for k in single if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for key in trained:
        torch.testing.assert_close(double[key], single[key], rtol=1e-5, atol=1e-6, msg=f"{key} differs")
    convs = [k for k in trained if k.endswith(("conv1.weight", "conv2.weight"))]
    assert all(not torch.allclose(single[k], initial[k], atol=1e-4) for k in convs), "training moved every layer"
