"""A few PKKD steps on digits with N CPU processes (DDP, gloo); saves the final weights. Run by test_ddp.py.

BatchNorm layers use fixed statistics, calibrated once on the first training images before training (the same
in every process): PyTorch's SyncBatchNorm needs a GPU, and per-replica batch statistics legitimately differ from
whole-batch ones. This isolates what DDP must get right here: data sharding, gradient averaging, AdderNet's
adaptive rescaling on the all-reduced gradient, and the all-reduced running sigma of the kernels. On GPUs,
``trainer.sync_batchnorm: true`` makes BatchNorm agree as well. The learning rate is small because the official
N(0, 1) adder filters send gradients of tens into the stem: at larger steps the processes' different summation
orders, amplified over a few steps, exceed the comparison's tolerance, which is about DDP, not chaos.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from pkkd_lightning import PKKDModule
from pkkd_lightning.data import DigitsDataModule

GLOBAL_BATCH = 16


def batchnorms(module: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


class FixedStatisticsPKKD(PKKDModule):
    def train(self, mode: bool = True) -> FixedStatisticsPKKD:
        super().train(mode)
        for layer in batchnorms(self):
            layer.eval()
        return self

    @torch.no_grad()
    def calibrate_batchnorm(self, images: torch.Tensor) -> None:
        """Set every BatchNorm's statistics to those of ``images`` (a cumulative average, momentum None)."""
        for layer in batchnorms(self):
            layer.reset_running_stats()
            layer.momentum = None
            layer.train()
        self.student(images)
        self.teacher(images)
        self.train()


class InOrderDigits(DigitsDataModule):
    """Unshuffled, so replica r's batch i is samples {i*B_global + r + k*world} and the replicas together see
    exactly the single process's batch i."""

    def train_dataloader(self) -> DataLoader:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        sampler = DistributedSampler(self.train_set, shuffle=False) if distributed else None
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False, sampler=sampler)


def cpu_trainer(devices: int, **overrides) -> L.Trainer:
    """A quiet CPU Trainer over ``devices`` processes (DDP when more than one) that keeps its own sampling."""
    kwargs = {
        "accelerator": "cpu",
        "devices": devices,
        "strategy": "ddp" if devices > 1 else "auto",
        "use_distributed_sampler": False,
        "num_sanity_val_steps": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**kwargs, **overrides})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    L.seed_everything(0)
    data = InOrderDigits(image_size=8, augment=False, batch_size=GLOBAL_BATCH // args.devices)
    module = FixedStatisticsPKKD("resnet20", 10, mode="pkkd", lr=0.001, lr_schedule="constant")
    data.setup("fit")
    module.calibrate_batchnorm(torch.stack([data.train_set[i][0] for i in range(64)]))
    torch.save(module.state_dict(), f"{args.out}.initial")
    trainer = cpu_trainer(args.devices, max_steps=args.steps, limit_val_batches=0)
    trainer.fit(module, data)
    if trainer.is_global_zero:
        torch.save(module.state_dict(), args.out)


if __name__ == "__main__":
    main()
