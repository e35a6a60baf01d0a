"""PreciseBatchNorm under DDP (N CPU processes, gloo): one re-estimation; saves the student's state dict.

One training step at a negligible learning rate, then one validation, before which the callback re-estimates
BatchNorm from 2 training batches per process. With the unshuffled sharding of ``ddp_worker.InOrderDigits`` the
processes' batches together are the single process's batches, so the first BatchNorm layer (its input depends
only on the stem convolution) must get the same statistics with 1 or 2 processes. Run by test_ddp.py.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from ddp_worker import GLOBAL_BATCH, InOrderDigits, cpu_trainer

from pkkd_lightning import PKKDModule
from pkkd_lightning.callbacks import PreciseBatchNorm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    L.seed_everything(0)
    data = InOrderDigits(image_size=8, augment=False, batch_size=GLOBAL_BATCH // args.devices)
    module = PKKDModule("resnet20", 10, mode="ann", lr=1e-9, lr_schedule="constant")
    trainer = cpu_trainer(
        args.devices,
        max_steps=1,
        val_check_interval=1,
        limit_val_batches=1,
        callbacks=[PreciseBatchNorm(num_batches=2)],
    )
    trainer.fit(module, data)
    if trainer.is_global_zero:
        torch.save(module.student.state_dict(), args.out)


if __name__ == "__main__":
    main()
