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

The gap as a function of training length comes from the validation curves (precise BatchNorm, every epoch),
paired by seed, and from separate cosine runs of other lengths (``--epochs 8``: runs named ``<method>_8ep_seed<k>``),
whose learning rate reaches zero at their own end; a longer one (``--epochs 48``) shows whether the 24-epoch CNN
has plateaued. The summary tables every length; its per-epoch table and the figure's gap panel follow the 48-epoch
runs (``--headline``), the longest with CNN, plain ANN and PKKD on every seed.

Usage::

    python -m experiments.convergence run --jobs 2      # resumable; 4-7 hours on 2 cores (measured per run,
                                                        # 2 at a time: CNN 12-22 min, ANN 40-60, PKKD 50-70)
    python -m experiments.convergence run --epochs 8 --methods cnn ann pkkd --seeds 0   # another length
    python -m experiments.convergence run --epochs 48 --methods cnn ann pkkd   # the headline length (2 at a time:
                                                        # CNN 25-50 min, ANN 85-90, PKKD about 100)
    python -m experiments.convergence summarize         # docs/results_convergence.md, docs/figures/convergence_*.png
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.calibration import schedule
from experiments.runner import REPO, Run, experiment_parser, run_all
from experiments.summary import final_test, load_results, mean_std, paired

if TYPE_CHECKING:
    import matplotlib.figure

CONFIG = "experiments/configs/cifar10_subset.yaml"
OUT = REPO / "experiments" / "results" / "convergence"
SEEDS = (0, 1, 2)
EPOCHS = 24  # the length of the runs named without a length (``cnn_seed0``); others are ``cnn_48ep_seed0``
#: The length the per-epoch table and the figure's gap panel follow: the longest with CNN, ANN and PKKD on every seed.
HEADLINE = 48
DATA = ("--data.init_args.train_per_class", "600", "--data.init_args.val_split", "1000")
OTHER_LENGTH = re.compile(r"_(\d+)ep_seed\d+$")  # the name of a run at another length than EPOCHS
LENGTH_GAPS = (("ann", "cnn"), ("pkkd", "cnn"), ("pkkd", "ann"))
#: The calibrated PKKD defaults (docs/results.md, "Calibration"): lambda 0.1, beta 0 -> 0.5 over the run, official
#: initialisation; what configs/cifar10_ann20.yaml uses.
NEW_PKKD: tuple[str, ...] = ("--model.feature_weight", "0.1", *schedule("beta", "linear", 0.0, 0.5))
METHODS: dict[str, tuple[str, ...]] = {
    "cnn": ("--model.mode", "cnn"),
    "ann": ("--model.mode", "ann"),
    "pkkd": NEW_PKKD,
    "pkkd_logits": (*NEW_PKKD, "--model.feature_weight", "0.0"),
    "pkkd_old": ("--model.init", "kaiming", "--model.feature_weight", "1.0", *schedule("beta", "linear", 0.0, 0.5)),
}


def arm(method: str, epochs: int = EPOCHS) -> str:
    """The run-name prefix of ``method`` at ``epochs``: ``<method>`` at the study's length, else ``<method>_<E>ep``
    (runs are ``<arm>_seed<k>``)."""
    return method if epochs == EPOCHS else f"{method}_{epochs}ep"


def runs(methods: Sequence[str] = tuple(METHODS), seeds: Sequence[int] = SEEDS, epochs: int = EPOCHS) -> list[Run]:
    """Every (seed, method) at ``epochs`` epochs, seeds outermost."""
    common = (*DATA, "--trainer.max_epochs", str(epochs), "--model.grad_share_every_n_steps", "100")
    return [Run(f"{arm(m, epochs)}_seed{s}", CONFIG, (*METHODS[m], *common), s) for s in seeds for m in methods]


def lengths(out: Path) -> list[int]:
    """The training lengths (epochs) with at least one finished run under ``out``, shortest first."""
    names = [path.parent.name for path in out.glob("*/result.json")]
    return sorted({int(match[1]) if (match := OTHER_LENGTH.search(name)) else EPOCHS for name in names})


def load_study(out: Path) -> dict[int, dict[str, dict[int, dict]]]:
    """``{epochs: {method: {seed: result}}}`` of every finished run under ``out``, read once, shortest length first."""
    return {epochs: {m: load_results(out, arm(m, epochs)) for m in METHODS} for epochs in lengths(out)}


def at_length(study: dict[int, dict[str, dict[int, dict]]], epochs: int) -> dict[str, dict[int, dict]]:
    """The runs of length ``epochs``, every method present (empty where none finished)."""
    return study.get(epochs, {m: {} for m in METHODS})


def mean_val_curve(runs_: Sequence[dict]) -> list[float]:
    """Validation top-1 (%) per epoch, the mean over ``runs_``, as long as the shortest of them."""
    if not runs_:
        return []
    length = min(len(r["val_curve"]) for r in runs_)
    return [statistics.mean(100 * r["val_curve"][i][1] for r in runs_) for i in range(length)]


def paired_val_gaps(results: dict[str, dict[int, dict]], a: str, b: str) -> list[float]:
    """Per epoch, the mean over the seeds both methods finished of ``a``'s minus ``b``'s validation accuracy (%)."""
    seeds = sorted(set(results[a]) & set(results[b]))
    if not seeds:
        return []
    length = min(len(results[m][s]["val_curve"]) for m in (a, b) for s in seeds)
    curve = {(m, s): [value for _, value in results[m][s]["val_curve"]] for m in (a, b) for s in seeds}
    return [statistics.mean(100 * (curve[a, s][i] - curve[b, s][i]) for s in seeds) for i in range(length)]


def summarize(study: dict[int, dict[str, dict[int, dict]]], headline: int = HEADLINE) -> str:
    """Final test accuracy per method and length, the paired gaps per length, and the validation curves and their
    paired gaps along the ``headline``-epoch runs."""
    test = {
        epochs: {m: {s: final_test(r) for s, r in by_seed.items()} for m, by_seed in by_method.items()}
        for epochs, by_method in study.items()
    }
    lines = [
        "| method | epochs | test top-1 % (final weights, mean ± std) | per seed | teacher test % |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        for epochs, by_method in study.items():
            if by_seed := test[epochs][method]:
                teachers = [
                    final_test(r, "teacher") for r in by_method[method].values() if "teacher_acc1" in r["final"]
                ]
                lines.append(
                    f"| {method} | {epochs} | {mean_std(list(by_seed.values()))} | "
                    f"{', '.join(f'{s}: {v:.2f}' for s, v in sorted(by_seed.items()))} | "
                    f"{mean_std(teachers) if teachers else '-'} |"
                )
    lines += ["", "| paired difference (test, final weights) | epochs | mean (per seed; t) |", "|---|---|---|"]
    for a, b in [("ann", "cnn"), ("pkkd", "cnn"), ("pkkd", "ann"), ("pkkd_logits", "ann"), ("pkkd", "pkkd_logits"),
                 ("pkkd", "pkkd_old")]:  # fmt: skip
        for epochs, at in test.items():
            if set(at[a]) & set(at[b]):
                lines.append(f"| {a} - {b} | {epochs} | {paired(at[a], at[b])[1]} |")
    lines += [
        "",
        "| length (separate cosine runs) | cnn test % (seeds) | "
        + " | ".join(f"{a} - {b} (test)" for a, b in LENGTH_GAPS)
        + " |",
        "|---" * (len(LENGTH_GAPS) + 2) + "|",
    ]
    for epochs, at in test.items():
        cells = [paired(at[a], at[b])[1] if set(at[a]) & set(at[b]) else "-" for a, b in LENGTH_GAPS]
        cnn = f"{mean_std(list(at['cnn'].values()))} ({len(at['cnn'])})" if at["cnn"] else "-"
        lines.append(f"| {epochs} epochs | {cnn} | " + " | ".join(cells) + " |")
    results = at_length(study, headline)
    methods = [method for method, by_seed in results.items() if by_seed]
    gaps = {pair: paired_val_gaps(results, *pair) for pair in LENGTH_GAPS}
    curves = {method: mean_val_curve(list(results[method].values())) for method in methods}
    lines += ["", f"Validation along the {headline}-epoch runs (mean of the finished seeds; gaps paired by seed):", "",
              "| epoch | " + " | ".join(f"{m} val %" for m in methods) + " | "
              + " | ".join(f"{a} - {b} (paired)" for a, b in LENGTH_GAPS) + " |",
              "|---" * (len(methods) + len(LENGTH_GAPS) + 1) + "|"]  # fmt: skip
    for epoch in range(max(map(len, curves.values()), default=0)):
        cells = [f"{curve[epoch]:.2f}" if epoch < len(curve) else "-" for curve in curves.values()]
        cells += [f"{gap[epoch]:+.2f}" if epoch < len(gap) else "-" for gap in gaps.values()]
        lines.append(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(
    study: dict[int, dict[str, dict[int, dict]]], figure_path: Path, headline: int = HEADLINE
) -> matplotlib.figure.Figure:
    """Validation accuracy over the epochs (mean of the seeds, precise BatchNorm; runs of other lengths than
    ``headline`` dashed) and the gaps to the CNN along the ``headline``-epoch runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = at_length(study, headline)
    colors = {method: f"C{index}" for index, method in enumerate(METHODS)}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for epochs, by_method in study.items():
        for method, by_seed in by_method.items():
            runs_ = list(by_seed.values())
            if curve := mean_val_curve(runs_):
                label = f"{method}, {epochs} ep ({len(runs_)} seed{'s' if len(runs_) > 1 else ''})"
                style = {"marker": "."} if epochs == headline else {"linestyle": "--", "linewidth": 1}
                left.plot(range(1, len(curve) + 1), curve, color=colors[method], label=label, **style)
    for method in ("ann", "pkkd", "pkkd_logits", "pkkd_old"):
        if gaps := paired_val_gaps(results, method, "cnn"):
            label = f"{method} - cnn ({len(set(results[method]) & set(results['cnn']))} paired)"
            right.plot(range(1, len(gaps) + 1), gaps, marker=".", color=colors[method], label=label)
    right.axhline(0, color="0.5", lw=0.8)
    left.set(xlabel="epoch", ylabel="validation top-1 (%)", title="Held-out accuracy (mean over the finished seeds)")
    right.set(
        xlabel="epoch",
        ylabel="difference (percentage points)",
        title=f"Gap to the CNN along the {headline}-epoch runs (same seeds)",
    )
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(
        f"ResNet-20, CIFAR-10: 5,000 training images, {headline}-epoch cosine runs (other lengths dashed), 2 CPU cores",
        fontsize=10,
    )
    figure.tight_layout()
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(figure_path, dpi=120)
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = experiment_parser(__doc__, OUT)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="training length of the runs (their cosine's end)")
    parser.add_argument(
        "--headline",
        type=int,
        default=HEADLINE,
        help="the length whose validation curves the summary and figure follow",
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        run_all(runs(args.methods, args.seeds, args.epochs), args.out, args.jobs, args.threads)
    study = load_study(args.out)
    table = summarize(study, args.headline)
    if args.out.resolve() == OUT.resolve():  # runs kept elsewhere (e.g. baselines run again beside another study's)
        (REPO / "docs" / "results_convergence.md").write_text(table)  # are printed, not written over the docs
        plot(study, REPO / "docs" / "figures" / "convergence_curves.png", args.headline)
    print(table)


if __name__ == "__main__":
    main()
