"""How much of PKKD's kernel maps tells the channels apart, at initialisation and after training.

For each checkpoint (and for freshly initialised modules with either initialisation) this prints the channel share
(:func:`pkkd_lightning.analysis.channel_share`: 0 = every channel holds the same map, about 1 = channels vary
independently) of the ANN's Laplace map and of the CNN's Gaussian map at every distillation point, on the first
1,000 CIFAR-10 test images. The test images are only looked at, never used to choose anything.

Usage::

    python -m experiments.kernel_channels experiments/results/calibration/pkkd_lam1_seed0 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L

from experiments.runner import REPO, SHARED_CIFAR10, newest
from pkkd_lightning import PKKDModule
from pkkd_lightning.analysis import kernel_channel_shares, load_module
from pkkd_lightning.callbacks import reestimate_batchnorm
from pkkd_lightning.data import CIFAR10DataModule


def rows(name: str, module: PKKDModule, loader) -> list[str]:
    return [
        f"| {name} | {r['layer']} | {r['student']:.3f} | {r['teacher']:.3f} |"
        for r in kernel_channel_shares(module, loader, max_batches=4)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders of experiments/runner.py")
    parser.add_argument("--data-dir", type=Path, default=SHARED_CIFAR10)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results_kernel_channels.md")
    args = parser.parse_args(argv)
    data = CIFAR10DataModule(args.data_dir, test_per_class=100, eval_batch_size=250, num_workers=0)
    data.setup("test")
    loader = data.test_dataloader()
    lines = [
        "| network | point | ANN Laplace map: channel share | CNN Gaussian map: channel share |",
        "|---|---|---|---|",
    ]
    for init in ("official", "kaiming"):
        L.seed_everything(0, verbose=False)
        module = PKKDModule("resnet20", 10, init=init)
        x, y = next(iter(loader))
        module.compute_losses(x, y)  # one training-mode pass sets the running sigmas, as in training
        # BatchNorm statistics of the initial weights, so that eval mode describes the initial network.
        reestimate_batchnorm([module.student, module.teacher], [x])
        lines += rows(f"initialised ({init})", module, loader)
    for run in args.runs:
        checkpoint = newest(list(run.glob("fit/version_*/checkpoints/last.ckpt")))
        lines += rows(f"trained: {run.parent.name}/{run.name}", load_module(checkpoint), loader)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
