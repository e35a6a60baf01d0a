"""How much of PKKD's kernel maps tells the channels apart, and how much of the teacher's map the student's can
reproduce, at initialisation and after training.

``--measure channel_share`` (the default): for each checkpoint (and for freshly initialised modules with either
initialisation) the channel share (:func:`pkkd_lightning.analysis.channel_share`: 0 = every channel holds the same
map, about 1 = channels vary independently) of the ANN's Laplace map and of the CNN's Gaussian map at every
distillation point.

``--measure explained_share``: for each checkpoint, the share of the CNN map's variation (around its channel
means) that the ANN map reproduces (:func:`pkkd_lightning.analysis.explained_share`): through the 1x1 transform as
trained, through the best 1x1 affine transform of the same maps (least squares: what any transform could reach
without changing the student), and the best with the distances centred over channels (``model.centering
channel``, the same weights); and the trained transform's weights (mean diagonal and mean absolute off-diagonal
entry; it starts as the identity, 1 and 0), beside the diagonal that the run's weight decay alone would leave.

Both read the first 1,000 CIFAR-10 test images; they are only looked at, never used to choose anything.

Usage::

    python -m experiments.kernel_channels experiments/results/calibration/pkkd_lam1_seed0 ...
    python -m experiments.kernel_channels --measure explained_share experiments/results/kernel_term/pkkd_lam0.3_seed0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
import torch.nn as nn

from experiments.runner import REPO, SHARED_CIFAR10, newest
from pkkd_lightning import PKKDModule
from pkkd_lightning.analysis import (
    best_transform,
    explained_share,
    kernel_channel_shares,
    kernel_maps,
    load_module,
    with_kernel_centering,
)
from pkkd_lightning.callbacks import reestimate_batchnorm
from pkkd_lightning.data import CIFAR10DataModule
from pkkd_lightning.distill.distiller import head_key
from pkkd_lightning.network_io import read_checkpoint
from pkkd_lightning.optim import sgd_with_schedule


def rows(name: str, module: PKKDModule, loader) -> list[str]:
    return [
        f"| {name} | {r['layer']} | {r['student']:.3f} | {r['teacher']:.3f} |"
        for r in kernel_channel_shares(module, loader, max_batches=4)
    ]


def explained_rows(name: str, module: PKKDModule, steps: int, loader) -> list[str]:
    """Per distillation point, the share of the teacher map's variation reproduced as trained, by the best 1x1
    transform, and by the best 1x1 transform of channel-centred maps; and the transform's weights after ``steps``
    training steps beside what weight decay alone leaves of the identity."""
    centred = kernel_maps(with_kernel_centering(module, "channel", next(iter(loader))[0]), loader)
    alone = weight_decay_alone(module, steps)
    lines = []
    for path, maps in kernel_maps(module, loader).items():
        best = explained_share(best_transform(maps.student_untransformed, maps.teacher), maps.teacher)
        best_centred = explained_share(best_transform(centred[path].student_untransformed, centred[path].teacher),
                                       centred[path].teacher)  # fmt: skip
        lines.append(f"| {name} | {path} | {explained_share(maps.student, maps.teacher):.3f} | {best:.3f} | "
                     f"{best_centred:.3f} | {transform_weights(module, path, alone)} |")  # fmt: skip
    return lines


def transform_weights(module: PKKDModule, path: str, decay_alone: float) -> str:
    """``mean diagonal (decay_alone) / mean |off-diagonal|`` of the point's 1x1 transform's weight matrix, or ``-``
    without one; ``decay_alone`` (:func:`weight_decay_alone`) only for a transform that starts as the identity."""
    transform = module.distiller.heads[head_key(path)].transform
    convs = [m for m in transform.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return "-"
    weight = convs[0].weight.detach().flatten(1)
    off_diagonal = (weight - torch.diag(weight.diagonal())).abs().sum() / (weight.numel() - len(weight))
    alone = f" ({decay_alone:.3f})" if transform is convs[0] else ""
    return f"{weight.diagonal().mean():.3f}{alone} / {off_diagonal:.4f}"


def weight_decay_alone(module: PKKDModule, steps: int) -> float:
    """What a weight of 1 becomes after ``steps`` steps of the run's SGD (learning rate, schedule, momentum, weight
    decay) when the loss does not reach it: the transform's diagonal if the matching loss never moved it."""
    hp = module.hparams
    weight = nn.Parameter(torch.ones(1))
    group = [{"name": "a weight no loss reaches", "params": [weight]}]
    config = sgd_with_schedule(group, hp.lr, hp.momentum, hp.nesterov, hp.weight_decay, hp.lr_schedule, steps)
    schedule = config.get("lr_scheduler", {}).get("scheduler")
    for _ in range(steps):
        weight.grad = torch.zeros_like(weight)
        config["optimizer"].step()
        if schedule is not None:
            schedule.step()
    return weight.item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders of experiments/runner.py")
    parser.add_argument("--data-dir", type=Path, default=SHARED_CIFAR10)
    parser.add_argument("--measure", choices=("channel_share", "explained_share"), default="channel_share")
    parser.add_argument("--out", type=Path, help="default: docs/results_kernel_channels.md, or "
                        "docs/results_kernel_explained.md for explained_share")  # fmt: skip
    args = parser.parse_args(argv)
    data = CIFAR10DataModule(args.data_dir, test_per_class=100, eval_batch_size=250, num_workers=0)
    data.setup("test")
    loader = data.test_dataloader()
    if args.measure == "explained_share":
        write(args.out or REPO / "docs" / "results_kernel_explained.md", [
            "| network | point | as trained (the 1x1 transform) | best 1x1 transform | best, centred maps | "
            "transform: mean diagonal (weight decay alone) / mean abs. off-diagonal |",
            "|---|---|---|---|---|---|",
            *(line for run in args.runs for line in explained_rows(run_name(run), trained(run), steps(run), loader)),
        ])  # fmt: skip
        return
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
        lines += rows(run_name(run), trained(run), loader)
    write(args.out or REPO / "docs" / "results_kernel_channels.md", lines)


def run_name(run: Path) -> str:
    return f"trained: {run.parent.name}/{run.name}"


def last_checkpoint(run: Path) -> Path:
    """The final checkpoint of a run folder of ``experiments/runner.py``."""
    return newest(list(run.glob("fit/version_*/checkpoints/last.ckpt")))


def trained(run: Path) -> PKKDModule:
    """The final weights of a run folder of ``experiments/runner.py``."""
    return load_module(last_checkpoint(run))


def steps(run: Path) -> int:
    """The number of training steps a run took."""
    return int(read_checkpoint(last_checkpoint(run))["global_step"])


def write(out: Path, lines: list[str]) -> None:
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
