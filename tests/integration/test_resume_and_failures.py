"""Exact resume, a NaN stop that keeps the last good checkpoint, SIGTERM checkpoints, bad checkpoints, bf16."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from pkkd_lightning import PKKDModule
from pkkd_lightning.callbacks import PreemptionCheckpoint, ProgressiveSchedule
from pkkd_lightning.module import NonFiniteLossError
from pkkd_lightning.network_io import load_network_weights, read_checkpoint
from tests.integration.helpers import quiet_trainer, tiny_digits

EPOCHS = 3


class StopAfterEpoch(L.Callback):
    """Simulates an interruption: stop cleanly once ``epoch`` has finished."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def run(root: Path, ckpt_path: str | None = None, extra: list[L.Callback] = (), **trainer_kwargs) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    module = PKKDModule("resnet20", 10, mode="pkkd", lr=0.05)
    callbacks = [
        ModelCheckpoint(dirpath=root, filename="last", monitor=None, save_top_k=1, enable_version_counter=False),
        ProgressiveSchedule("beta", "linear", 0.1, 0.5),
        *extra,
    ]
    trainer = quiet_trainer(
        max_epochs=EPOCHS, callbacks=callbacks, default_root_dir=root, enable_checkpointing=True, **trainer_kwargs
    )
    trainer.fit(module, tiny_digits(), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.slow
def test_resumed_run_reaches_the_same_weights_and_metrics(tmp_path):
    straight = run(tmp_path / "straight")
    run(tmp_path / "interrupted", extra=[StopAfterEpoch(1)])
    last = tmp_path / "interrupted" / "last.ckpt"
    assert read_checkpoint(last)["epoch"] == 1
    resumed = run(tmp_path / "resumed", ckpt_path=str(last))
    a, b = straight.lightning_module.state_dict(), resumed.lightning_module.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=f"{key} differs after resume")
    for name in ("val/student_acc1", "val/teacher_acc1", "val/student_loss"):
        torch.testing.assert_close(resumed.callback_metrics[name], straight.callback_metrics[name])
    assert resumed.lightning_module.beta == straight.lightning_module.beta


class PoisonBatch(L.Callback):
    """Turns the inputs of training step ``step`` into NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch[0].fill_(float("nan"))


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    steps_per_epoch = 6  # 200 images, batch 32, the last partial batch dropped
    with pytest.raises(NonFiniteLossError, match="loss term 'student_ce'"):
        run(tmp_path, extra=[PoisonBatch(steps_per_epoch + 2)])
    checkpoint = read_checkpoint(tmp_path / "last.ckpt")
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == steps_per_epoch
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "preempted.ckpt").exists()  # a failure is not a preemption


class SendSigterm(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_leaves_a_checkpoint_that_resumes(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit):
            run(tmp_path, extra=[SendSigterm(3), PreemptionCheckpoint(dirpath=str(tmp_path))])
    finally:
        signal.signal(signal.SIGTERM, previous)
    preempted = tmp_path / "preempted.ckpt"
    assert read_checkpoint(preempted)["global_step"] >= 3
    trainer = run(tmp_path / "after", ckpt_path=str(preempted))
    assert trainer.current_epoch == EPOCHS
    assert torch.isfinite(trainer.callback_metrics["val/student_acc1"])


def test_missing_and_corrupt_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        read_checkpoint(tmp_path / "nothing.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        read_checkpoint(corrupt)
    torch.save({"state_dict": {"unexpected": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_network_weights(torch.nn.Linear(2, 2), tmp_path / "other.pt")


def test_bf16_mixed_precision_trains_on_cpu_with_adder_math_in_float32(tmp_path):
    module = PKKDModule("resnet20", 10, mode="pkkd")
    trainer = quiet_trainer(precision="bf16-mixed", max_steps=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(module, tiny_digits())
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    x = torch.randn(2, 16, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module.student.layer1[0].conv1(x.bfloat16()).dtype == torch.float32
