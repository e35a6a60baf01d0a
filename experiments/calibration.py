"""Calibration sweep of PKKD's distillation weights on a small, cheap CIFAR-10 protocol, judged on held-out data.

Protocol (``experiments/configs/cifar10_subset.yaml``): ResNet-20, the first 360 training images of each class of
which a seeded 2,000 are held out for validation (1,600 left for training), 15 epochs of batch 64 (375 steps),
SGD lr 0.1 with a cosine schedule, precise BatchNorm before every validation. Every arm runs on seeds 0 and 1;
the arms are compared on the **final weights' validation accuracy** (the test split is only reported, never used
to choose).

| arm              | what it changes (from official init, lambda 1, beta 0 -> 0.5 linearly over the run)  |
|------------------|---------------------------------------------------------------------------------------|
| `cnn`, `ann`     | the baselines (`ann_kaiming`: the plain ANN with the old initialisation)            |
| `pkkd_lam*`      | lambda = 1, 0.3, 0.1, 0 (0: logit distillation from the jointly trained teacher only) |
| `pkkd_old`       | the old defaults: kaiming initialisation, lambda 1                                    |
| `pkkd_beta_early`| lambda 0.1, beta 0 -> 0.5 over the first third of the run, then held                 |
| `pkkd_beta_const`| lambda 0.1, beta 0.5 throughout                                                       |
| `pkkd_lam_warmup`| lambda 0 -> 0.1 over the first third of the run                                      |
| `pkkd_centered`  | lambda 1e-4 with distances standardised over channels before the kernels [ours]      |

Usage::

    python -m experiments.calibration run --jobs 2 --seeds 0      # every arm; resumable; about 1.5 hours on 2 cores
    python -m experiments.calibration run --jobs 2 --seeds 1 --arms cnn ann ...   # the replicated arms
    python -m experiments.calibration summarize        # docs/results_calibration.md
"""

from __future__ import annotations

import json
import statistics
from math import nan
from pathlib import Path

from experiments.runner import REPO, Run, experiment_parser, run_all
from pkkd_lightning.analysis import read_run_metrics

CONFIG = "experiments/configs/cifar10_subset.yaml"
OUT = REPO / "experiments" / "results" / "calibration"
SEEDS = (0, 1)
EPOCHS = 15
SCHEDULE = "pkkd_lightning.callbacks.LossWeightSchedule"


def schedule(name: str, shape: str, start: float, end: float, end_epoch: int | None = None) -> tuple[str, ...]:
    """Overrides that append a ``LossWeightSchedule`` to the trainer's callbacks."""
    args = [f"--trainer.callbacks+={SCHEDULE}", "--trainer.callbacks.name", name, "--trainer.callbacks.shape", shape]
    args += ["--trainer.callbacks.start", str(start), "--trainer.callbacks.end", str(end)]
    if end_epoch is not None:
        args += ["--trainer.callbacks.end_epoch", str(end_epoch)]
    return tuple(args)


OLD_BETA = schedule("beta", "linear", 0.0, 0.5)
THIRD = EPOCHS // 3 - 1  # the ramp's last epoch: 0..4 of 15

ARMS: dict[str, tuple[str, ...]] = {
    "cnn": ("--model.mode", "cnn"),
    "ann": ("--model.mode", "ann"),
    "ann_kaiming": ("--model.mode", "ann", "--model.init", "kaiming"),
    "pkkd_lam1": ("--model.feature_weight", "1.0", *OLD_BETA),
    "pkkd_lam0.3": ("--model.feature_weight", "0.3", *OLD_BETA),
    "pkkd_lam0.1": ("--model.feature_weight", "0.1", *OLD_BETA),
    "pkkd_lam0": ("--model.feature_weight", "0.0", *OLD_BETA),
    "pkkd_old": ("--model.init", "kaiming", "--model.feature_weight", "1.0", *OLD_BETA),
    "pkkd_beta_early": ("--model.feature_weight", "0.1", *schedule("beta", "linear", 0.0, 0.5, THIRD)),
    "pkkd_beta_const": ("--model.feature_weight", "0.1", "--model.beta", "0.5"),
    "pkkd_lam_warmup": (*OLD_BETA, *schedule("feature_weight", "linear", 0.0, 0.1, THIRD)),
    "pkkd_centered": ("--model.feature_weight", "1e-4", "--model.centering", "channel", *OLD_BETA),
}


def runs(arms: tuple[str, ...] = tuple(ARMS), seeds: tuple[int, ...] = SEEDS) -> list[Run]:
    """The (seed, arm) pairs asked for, seeds outermost so that a partial sweep has whole seeds."""
    epochs = ("--trainer.max_epochs", str(EPOCHS))
    return [Run(f"{arm}_seed{seed}", CONFIG, (*ARMS[arm], *epochs), seed) for seed in seeds for arm in arms]


POINTS = ("layer1.2.conv2", "layer2.2.conv2", "layer3.2.conv2")


def feature_shares(run_dir: Path) -> list[tuple[float, float]]:
    """Per distillation point: the features' mean gradient share over the first and the last third of training."""
    series = read_run_metrics(run_dir / "fit")
    shares = []
    for point in POINTS:
        values = [p.value for p in series.get(f"train/grad_share/{point}/features", [])]
        third = max(len(values) // 3, 1)
        shares.append((statistics.mean(values[:third]), statistics.mean(values[-third:])) if values else (nan, nan))
    return shares


def summarize(out: Path) -> str:
    """The sweep's table: validation (chooses) and test (reported) accuracy of the final weights, per arm, and the
    gradient share of the feature loss at the three distilled layers (seed 0) early and late in training."""
    rows = ["| arm | val top-1 % (final weights) | per seed | test top-1 % (final weights) | teacher test % "
            "| feature share of the gradient, layer1 / 2 / 3: first third -> last third |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for arm in ARMS:
        results = [json.loads(p.read_text()) for p in sorted(out.glob(f"{arm}_seed*/result.json"))]
        if not results:
            continue
        val = [100 * r["val_curve"][-1][1] for r in results]
        test = [100 * r["final"]["student_acc1"] for r in results]
        teacher = [100 * r["final"]["teacher_acc1"] for r in results if "teacher_acc1" in r["final"]]
        shares = feature_shares(out / f"{arm}_seed{SEEDS[0]}")
        share_text = " / ".join(f"{a:.2f} -> {b:.2f}" for a, b in shares) if arm.startswith("pkkd") else "-"
        rows.append(
            f"| {arm} | {statistics.mean(val):.2f} | {', '.join(f'{v:.2f}' for v in val)} | "
            f"{statistics.mean(test):.2f} | {f'{statistics.mean(teacher):.2f}' if teacher else '-'} | {share_text} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = experiment_parser(__doc__, OUT)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    args = parser.parse_args(argv)
    if args.command == "run":
        run_all(runs(tuple(args.arms), tuple(args.seeds)), args.out, args.jobs, args.threads)
    table = summarize(args.out)
    (REPO / "docs" / "results_calibration.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
