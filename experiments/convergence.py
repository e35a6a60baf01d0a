"""Convergence study on real CIFAR-10 (CPU): does PKKD close the ANN-CNN gap when the runs are longer?

Protocol (``experiments/configs/cifar10_subset.yaml`` with these overrides): ResNet-20, the first 600 training
images of each class of which a seeded 1,000 are held out for validation (5,000 left for training), 24 epochs of
batch 64 (1,872 steps), SGD lr 0.1 with a cosine schedule to zero, precise BatchNorm before every validation,
seeds 0, 1, 2. Final weights tested on all 10,000 test images; nothing is chosen on the test split.

| method          | what it trains                                                                     |
|-----------------|------------------------------------------------------------------------------------|
| `cnn`           | the CNN alone                                                                      |
| `ann`           | a plain AdderNet                                                                   |
| `pkkd`          | PKKD with the calibrated defaults (the digits and paper configs' settings)         |
| `pkkd_logits`   | the ablation: PKKD without the feature loss (lambda 0): soft logits of the joint teacher only |
| `pkkd_old`      | PKKD with the previous defaults: kaiming initialisation, lambda 1, beta 0 -> 0.5 over the run |

The gap as a function of training length comes from the validation curves (precise BatchNorm, every epoch).

Usage::

    python -m experiments.convergence run --jobs 2      # resumable; about 4 hours on 2 cores
    python -m experiments.convergence summarize         # docs/results_convergence.md, docs/figures/convergence_*.png
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from experiments.calibration import schedule
from experiments.runner import REPO, Run, run_all
from experiments.summary import final_test, load_results, mean_std, paired

CONFIG = "experiments/configs/cifar10_subset.yaml"
OUT = REPO / "experiments" / "results" / "convergence"
SEEDS = (0, 1, 2)
EPOCHS = 24
DATA = ("--data.init_args.train_per_class", "600", "--data.init_args.val_split", "1000")
COMMON = (*DATA, "--trainer.max_epochs", str(EPOCHS), "--model.grad_share_every_n_steps", "100")
#: The calibrated PKKD defaults (docs/results.md, "Calibration"): what configs/cifar10_ann20.yaml uses.
NEW_PKKD: tuple[str, ...] = ()
METHODS: dict[str, tuple[str, ...]] = {
    "cnn": ("--model.mode", "cnn"),
    "ann": ("--model.mode", "ann"),
    "pkkd": NEW_PKKD,
    "pkkd_logits": (*NEW_PKKD, "--model.feature_weight", "0.0"),
    "pkkd_old": ("--model.init", "kaiming", "--model.feature_weight", "1.0", *schedule("beta", "linear", 0.0, 0.5)),
}


def runs(methods: tuple[str, ...] = tuple(METHODS)) -> list[Run]:
    """Every (seed, method), seeds outermost."""
    return [Run(f"{m}_seed{s}", CONFIG, (*METHODS[m], *COMMON), s) for s in SEEDS for m in methods]


def summarize(out: Path) -> str:
    """Final test accuracy per method, the paired gaps, and the gaps along the validation curves."""
    results = {m: load_results(out, m) for m in METHODS}
    test = {m: {s: final_test(r) for s, r in rs.items()} for m, rs in results.items()}
    lines = ["| method | test top-1 % (final weights, mean ± std) | per seed | teacher test % |", "|---|---|---|---|"]
    for method, by_seed in test.items():
        if not by_seed:
            continue
        teachers = [final_test(r, "teacher") for r in results[method].values() if "teacher_acc1" in r["final"]]
        lines.append(
            f"| {method} | {mean_std(list(by_seed.values()))} | {', '.join(f'{v:.2f}' for v in by_seed.values())} | "
            f"{mean_std(teachers) if teachers else '-'} |"
        )
    lines += ["", "| paired difference (test, final weights) | mean (per seed; t) |", "|---|---|"]
    for a, b in [("ann", "cnn"), ("pkkd", "cnn"), ("pkkd", "ann"), ("pkkd_logits", "ann"), ("pkkd", "pkkd_logits"),
                 ("pkkd", "pkkd_old")]:  # fmt: skip
        if test[a] and test[b]:
            lines.append(f"| {a} - {b} | {paired(test[a], test[b])[1]} |")
    lines += ["", "| epoch | " + " | ".join(f"{m} val %" for m in METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
    for epoch in range(EPOCHS):
        cells = []
        for method in METHODS:
            values = [100 * dict(r["val_curve"]).get(epoch, float("nan")) for r in results[method].values()]
            cells.append(f"{statistics.mean(values):.2f}" if values else "-")
        lines.append(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("run", "summarize"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "run":
        run_all(runs(tuple(args.methods)), args.out, args.jobs, args.threads)
    table = summarize(args.out)
    (REPO / "docs" / "results_convergence.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
