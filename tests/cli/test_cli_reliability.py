"""What a user gets when a run goes wrong, through ``cli.py`` as users run it (docs/reliability.md's table).

Each test drives the demo config made tiny (8x8 digits, a few batches per epoch) with the CLI's default callbacks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pkkd_lightning.cli import PREEMPTED_EXIT_CODE, cli_main
from pkkd_lightning.network_io import read_checkpoint

pytestmark = pytest.mark.slow

DEMO = "configs/digits_pkkd.yaml"
TINY = (
    *("--data.init_args.image_size", "8", "--data.init_args.train_per_class", "16"),
    *("--data.init_args.test_per_class", "4", "--data.init_args.batch_size", "32"),
    *("--trainer.enable_progress_bar", "false", "--model.grad_share_every_n_steps", "0"),
)


def fit(run_cli, root: Path, *args: str):
    return run_cli("fit", "--config", DEMO, *TINY, "--trainer.default_root_dir", str(root), *args)


def all_finite(checkpoint: dict) -> bool:
    tensors = checkpoint["state_dict"].values()
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


@pytest.mark.parametrize("factor", [1e15, 1e30], ids=["huge-finite-loss", "overflow"])
def test_a_diverging_run_stops_before_saving_the_ruin_and_names_the_last_good_checkpoint(run_cli, tmp_path, factor):
    steps_per_epoch = 4  # 160 images, 16 of them carved out for validation, batch 32
    strike = [
        *("--trainer.callbacks+=tests.cli.failure_callbacks.ScaleWeightsAtStep", "--trainer.callbacks.step"),
        *(str(steps_per_epoch + 2), "--trainer.callbacks.factor", str(factor)),
    ]
    result = fit(run_cli, tmp_path, "--trainer.max_epochs", "3", "--test_after_fit", "false", *strike)
    assert result.returncode != 0
    assert "DivergenceError" in result.stderr
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    assert f"The last good checkpoint is {last}" in result.stderr
    checkpoints = sorted((tmp_path / "version_0" / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["best-epoch000.ckpt", "last.ckpt"]  # nothing from the ruined epoch
    assert all(all_finite(read_checkpoint(p)) for p in checkpoints)
    assert read_checkpoint(last)["global_step"] == steps_per_epoch


def test_the_best_checkpoint_survives_a_resume(run_cli, tmp_path):
    # The demo's beta schedule ends at 0.5: in a 1-epoch run epoch 0 has 0.5; resumed to 3 epochs, epochs 1 and 2
    # have 0.3 and 0.5. With "highest train/beta" epoch 0 stays the best (a tie does not replace it); a checkpoint
    # callback that forgot the best score would take epoch 1.
    # A constant learning rate: a cosine run cannot be resumed to another length (test_cli_trust.py).
    best_is_first = ("--checkpoint.monitor", "train/beta", "--checkpoint.mode", "max", "--test_after_fit", "false")
    best_is_first += ("--model.lr_schedule", "constant")
    assert fit(run_cli, tmp_path, "--trainer.max_epochs", "1", *best_is_first).returncode == 0
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    resumed = fit(run_cli, tmp_path, "--trainer.max_epochs", "3", *best_is_first, "--ckpt_path", str(last))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    new = tmp_path / "version_1" / "checkpoints"
    assert sorted(p.name for p in new.glob("best-*.ckpt")) == ["best-epoch000.ckpt"]
    assert read_checkpoint(new / "best-epoch000.ckpt")["epoch"] == 0
    exported = torch.load(tmp_path / "version_1" / "student.pt", weights_only=False)["state_dict"]
    first = read_checkpoint(last)["state_dict"]
    torch.testing.assert_close(exported["fc.weight"], first["student.fc.weight"], rtol=0, atol=0)


def test_sigterm_exits_with_143_and_says_where_the_checkpoint_is(run_cli, tmp_path):
    sigterm = ("--trainer.callbacks+=tests.integration.resume_callbacks.SigtermAtStep", "--trainer.callbacks.step", "3")
    result = fit(run_cli, tmp_path, "--trainer.max_epochs", "2", *sigterm)
    assert result.returncode == PREEMPTED_EXIT_CODE == 143
    preempted = tmp_path / "version_0" / "checkpoints" / "preempted.ckpt"
    assert preempted.is_file()
    assert f"resume with --ckpt_path {preempted}" in result.stderr
    assert "--ckpt_path last" in result.stderr


def test_a_run_that_fails_before_training_leaves_no_log_folder(run_cli, tmp_path):
    result = run_cli(
        "fit", "--config", "configs/cifar10_cnn20.yaml", "--data.init_args.data_dir", str(tmp_path / "missing"),
        "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.accelerator", "cpu",
    )  # fmt: skip
    assert result.returncode != 0 and "not found under data_dir" in result.stderr
    assert not list((tmp_path / "runs").glob("version_*"))


@pytest.fixture(scope="module")
def resnet20_checkpoint(run_cli, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resnet20")
    assert fit(run_cli, root, "--trainer.max_steps", "1", "--test_after_fit", "false").returncode == 0
    return root / "version_0" / "checkpoints" / "last.ckpt"


def test_a_checkpoint_of_another_architecture_names_both_and_the_path(resnet20_checkpoint):
    args = ["test", "--config", DEMO, *TINY, "--model.arch", "resnet32", "--ckpt_path", str(resnet20_checkpoint)]
    with pytest.raises(ValueError) as error:
        cli_main(args)
    message = str(error.value)
    assert str(resnet20_checkpoint) in message
    assert "model.arch='resnet20'" in message and "model.arch='resnet32'" in message
    assert len(message) < 600


def test_a_teacher_checkpoint_of_another_architecture_names_both_and_the_path(resnet20_checkpoint):
    from pkkd_lightning import PKKDModule

    with pytest.raises(ValueError) as error:
        PKKDModule("resnet32", 10, mode="kd", teacher_checkpoint=str(resnet20_checkpoint))
    message = str(error.value)
    assert str(resnet20_checkpoint) in message and "arch=resnet20" in message and "arch=resnet32" in message
    assert len(message) < 800


def test_checkpoint_values_that_replace_the_config_are_announced(resnet20_checkpoint, tmp_path):
    args = ["test", "--config", DEMO, *TINY, "--model.lr", "0.05", "--ckpt_path", str(resnet20_checkpoint)]
    with pytest.warns(UserWarning, match="model.lr: 0.05 -> 0.1"):
        cli = cli_main([*args, "--trainer.default_root_dir", str(tmp_path)])
    assert cli.model.hparams.lr == 0.1  # the checkpoint's
