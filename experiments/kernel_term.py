"""Why PKKD's kernel feature term fades at length: the variants that test each suspect, on the 24-epoch protocol.

The convergence study (``experiments/convergence.py``) found that at 48 epochs the feature term adds nothing
measurable over distillation from the soft logits alone (``pkkd`` - ``pkkd_logits`` = +0.22, t = 0.4), after +1.28
(t = 4.3) at 24 epochs, and that its gradient share at the distilled layers falls to about 0 after some 250 steps.
Each variant below changes one suspect of the calibrated PKKD setting (``convergence.NEW_PKKD``: lambda 0.1,
beta 0 -> 0.5 over the run) on the convergence study's 24-epoch protocol (same config, data and overrides), so that
its runs pair with ``pkkd_seed<k>`` and ``pkkd_logits_seed<k>`` in ``experiments/results/convergence``:

| variant            | suspect tested                                                                    |
|--------------------|-----------------------------------------------------------------------------------|
| `pkkd_notransform` | the training-only 1x1 transform absorbs the mismatch (no transform at all)        |
| `pkkd_lam0.3`      | lambda 0.1, calibrated at 10-24 epochs, is too weak (three times stronger)         |
| `pkkd_lam1`        | likewise (ten times stronger; the paper's value)                                  |
| `pkkd_lamgrow`     | the term matters late, when the logits are fitted (lambda 0.1 -> 1 over the run)   |
| `pkkd_centered`    | the matched quantity is dominated by the patch energy on the CNN side (distances   |
|                    | standardised over the channels before the kernels, ``model.centering channel``)   |
| `pkkd_standardized`| the 1x1 transform cannot fit under SGD: the Laplace map it reads varies little, so |
|                    | its weights barely move (it reads the map standardised per channel instead,       |
|                    | ``model.transform_input standardized``)                                            |

Every run logs the gradient shares of the student's terms at the distilled layers every 100 steps
(``train/grad_share/<layer>/<term>``), as the convergence runs do, and from ``pkkd_lam0.3`` on the kernel maps'
statistics on the same steps (``train/kernel/<layer>/<statistic>``: the matching loss before and after the 1x1
transform, the maps' mean and spread). Choices are read on validation only: the summary names the variant whose
late validation accuracy is highest, paired by seed with ``pkkd``, at each length.

The variants chosen that way run again on the convergence study's 48-epoch protocol (``--epochs 48``: runs named
``<variant>_48ep_seed<k>``, paired with ``pkkd_48ep_seed<k>`` and ``pkkd_logits_48ep_seed<k>``). For each variant
with at least two seeds the summary states the rule for a new default (:func:`default_rule`): at least +0.5 points
over logits-only distillation on test and on validation, each with a paired t of at least 3.

Usage::

    python -m experiments.kernel_term run --jobs 1          # resumable; 50-110 min a run on one core
    python -m experiments.kernel_term run --epochs 48 --variants pkkd_notransform --seeds 0 1 2
    python -m experiments.kernel_term summarize             # docs/results_kernel_term.md, figures/kernel_term.png

The baselines' runs pair exactly with a variant's only on the same machine and install (the teacher column of the
summary shows it: the teacher computes what the CNN alone computes there). To pair on this machine, run them again
into this study's folder, where the summary reads them in place of the convergence study's::

    python -m experiments.convergence run --epochs 48 --methods pkkd_logits pkkd --out experiments/results/kernel_term
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from experiments.calibration import schedule
from experiments.convergence import CONFIG, DATA, EPOCHS, NEW_PKKD, arm, lengths
from experiments.convergence import OUT as CONVERGENCE_OUT
from experiments.runner import REPO, Run, experiment_parser, run_all
from experiments.summary import final_test, interval95, load_results, paired, t_value
from pkkd_lightning.analysis import read_run_metrics

OUT = REPO / "experiments" / "results" / "kernel_term"
SEEDS = (0,)
VARIANTS: dict[str, tuple[str, ...]] = {
    "pkkd_notransform": (*NEW_PKKD, "--model.linear_transform", "false"),
    "pkkd_lam0.3": (*NEW_PKKD, "--model.feature_weight", "0.3"),
    "pkkd_lam1": (*NEW_PKKD, "--model.feature_weight", "1.0"),
    "pkkd_lamgrow": (*NEW_PKKD, *schedule("feature_weight", "linear", 0.1, 1.0)),
    "pkkd_centered": (*NEW_PKKD, "--model.centering", "channel"),
    "pkkd_standardized": (*NEW_PKKD, "--model.transform_input", "standardized"),
}
#: The convergence study's runs the variants are read against (same protocol and seeds).
BASELINES = ("pkkd", "pkkd_logits")
#: Validation accuracy is read as the mean of the last epochs (the curve's end is flat under the cosine schedule).
LAST_EPOCHS = 6


def runs(variants: Sequence[str] = tuple(VARIANTS), seeds: Sequence[int] = SEEDS, epochs: int = EPOCHS) -> list[Run]:
    """Every (seed, variant) on the convergence study's protocol at ``epochs`` epochs, seeds outermost; named as the
    convergence study names its runs of that length."""
    common = (*DATA, "--trainer.max_epochs", str(epochs), "--model.grad_share_every_n_steps", "100")
    return [Run(f"{arm(v, epochs)}_seed{s}", CONFIG, (*VARIANTS[v], *common), s) for s in seeds for v in variants]


def late_validation(result: dict, last: int = LAST_EPOCHS) -> float:
    """Mean student validation accuracy (%) over the run's last ``last`` epochs."""
    return statistics.mean(100 * value for _, value in result["val_curve"][-last:])


#: Every run of the study logs its diagnostics every this many steps (``model.grad_share_every_n_steps``).
DIAGNOSIS_EVERY = 100


def layer_series(run_dir: Path, prefix: str, suffix: str, every: int = DIAGNOSIS_EVERY) -> dict[str, dict[int, float]]:
    """``{layer: {diagnosis step: value}}`` of the series named ``<prefix><layer><suffix>``.

    Runs logged before the diagnostics were written at the step that computes them repeat each value at the later
    logging steps of its epoch, under those steps (and lose it when the epoch ends first). Each value is therefore
    read once, at the step it came from: the multiple of ``every`` at or below the step it was logged under.
    """
    layers: dict[str, dict[int, float]] = {}
    for name, series in read_run_metrics(run_dir / "fit").items():
        if name.startswith(prefix) and name.endswith(suffix):
            first = layers.setdefault(name[len(prefix) : len(name) - len(suffix)], {})
            for point in series:
                first.setdefault(point.step - point.step % every, point.value)
    return layers


def mean_over_layers(layers: dict[str, dict[int, float]]) -> dict[int, float]:
    """``{step: mean over the layers that have a value at that step}``, steps in order."""
    by_step: dict[int, list[float]] = {}
    for series in layers.values():
        for step, value in series.items():
            by_step.setdefault(step, []).append(value)
    return {step: statistics.mean(values) for step, values in sorted(by_step.items())}


def diagnosis_series(run_dir: Path, prefix: str, suffix: str, every: int = DIAGNOSIS_EVERY) -> dict[int, float]:
    """``{diagnosis step: mean over the distilled layers}`` of :func:`layer_series`."""
    return mean_over_layers(layer_series(run_dir, prefix, suffix, every))


def unexplained_series(run_dir: Path) -> dict[int, float]:
    """``{diagnosis step: mean over the layers of loss after the transform / the teacher map's variance}``: 1 when
    the transformed student map predicts the teacher map's mean and nothing of how it varies."""
    losses = layer_series(run_dir, "train/kernel/", "/loss_after_transform")
    spreads = layer_series(run_dir, "train/kernel/", "/teacher_spread")
    ratios: dict[str, dict[int, float]] = {}
    for layer, series in losses.items():
        spread = spreads.get(layer, {})
        ratios[layer] = {step: loss / spread[step] ** 2 for step, loss in series.items() if step in spread}
    return mean_over_layers(ratios)


def logged_mean(run_dir: Path, prefix: str, suffix: str, steps: tuple[int, int]) -> float | None:
    """Mean of :func:`diagnosis_series` over the diagnosis steps in ``[start, end)``; None when the run logged none
    there."""
    values = [v for step, v in diagnosis_series(run_dir, prefix, suffix).items() if steps[0] <= step < steps[1]]
    return statistics.mean(values) if values else None


def feature_share(run_dir: Path, steps: tuple[int, int]) -> float | None:
    """Mean gradient share of the feature term over the distilled layers, for logged steps in ``[start, end)``."""
    return logged_mean(run_dir, "train/grad_share/", "/features", steps)


#: An arm of the study at one length: ``{method: (results folder, {seed: result})}``.
Arms = dict[str, tuple[Path, dict[int, dict]]]


def arms_at(out: Path, baseline_out: Path, epochs: int) -> Arms:
    """The baselines and the variants, each with its finished runs at ``epochs``. A baseline run again beside the
    variants (under ``out``, named as the convergence study names it) is read there, on the machine the variants ran
    on; otherwise it is read from the convergence study (``baseline_out``)."""
    arms = {}
    for method in BASELINES:
        here = load_results(out, arm(method, epochs))
        arms[method] = (out, here) if here else (baseline_out, load_results(baseline_out, arm(method, epochs)))
    arms.update({v: (out, load_results(out, arm(v, epochs))) for v in VARIANTS})
    return arms


def run_folder(arms: Arms, method: str, seed: int, epochs: int) -> Path:
    """Where ``method``'s run of ``seed`` at ``epochs`` keeps its logs."""
    return arms[method][0] / f"{arm(method, epochs)}_seed{seed}"


def summarize(out: Path, baseline_out: Path = CONVERGENCE_OUT) -> str:
    """Per length with finished variants: test (final weights) and late validation per method, paired by seed with
    the baselines, the feature term's gradient share early and late in the run, the variant highest on validation,
    and the kernel statistics."""
    return "\n".join(length_summary(arms_at(out, baseline_out, epochs), epochs) for epochs in lengths(out))


def length_summary(arms: Arms, epochs: int) -> str:
    """The tables of :func:`summarize` for the runs of one length."""
    scores = {
        method: ({s: final_test(r) for s, r in by_seed.items()}, {s: late_validation(r) for s, r in by_seed.items()})
        for method, (_, by_seed) in arms.items()
    }
    lines = [
        f"{epochs} epochs:",
        "",
        f"| method | seeds | test % (final) | val % (last {LAST_EPOCHS} epochs) | "
        + " | ".join(f"- {b}: test / val (paired)" for b in BASELINES)
        + " | feature grad share, steps 0-300 | steps 1000 on | teacher test % by seed |",
        "|---" * (7 + len(BASELINES)) + "|",
    ]
    for method, (_, by_seed) in arms.items():
        if not by_seed:
            continue
        test, val = scores[method]
        paired_cells = [
            "-" if base == method else f"{paired(test, scores[base][0])[1]} / {paired(val, scores[base][1])[1]}"
            for base in BASELINES
        ]
        early = [feature_share(run_folder(arms, method, s, epochs), (0, 300)) for s in by_seed]
        late = [feature_share(run_folder(arms, method, s, epochs), (1000, 10**9)) for s in by_seed]
        lines.append(
            f"| {method} | {', '.join(map(str, sorted(by_seed)))} | {statistics.mean(test.values()):.2f} | "
            f"{statistics.mean(val.values()):.2f} | {' | '.join(paired_cells)} | {_mean_or_dash(early)} | "
            f"{_mean_or_dash(late)} | {teacher_cell(by_seed)} |"
        )
    chosen = highest_on_validation({v: scores[v][1] for v in VARIANTS if arms[v][1]}, scores[BASELINES[0]][1])
    if chosen:
        lines += ["", f"Highest on validation (paired with {BASELINES[0]}): {chosen[0]} ({chosen[1]:+.2f})."]
    logits_only = scores[RULE_BASELINE]
    for variant in VARIANTS:
        if len(paired(scores[variant][0], logits_only[0])[0]) >= 2:
            lines += ["", default_rule(variant, *scores[variant], *logits_only)]
    statistics_table = kernel_statistics_table(arms, epochs)
    return "\n".join(lines) + "\n\n" + (statistics_table + "\n" if statistics_table else "")


def teacher_cell(by_seed: dict[int, dict]) -> str:
    """The teachers' final test accuracy per seed, ``-`` for runs without one. The teacher computes what the CNN alone
    computes on one machine and install, so runs whose teachers differ on a seed ran in different environments, and
    their paired difference carries that change as well as the method's."""
    return ", ".join(
        f"{final_test(r, 'teacher'):.2f}" if "teacher_acc1" in r["final"] else "-" for _, r in sorted(by_seed.items())
    )


def highest_on_validation(
    variants: dict[str, dict[int, float]], baseline: dict[int, float]
) -> tuple[str, float] | None:
    """The variant whose validation accuracy minus the baseline's, averaged over the seeds both have, is highest,
    with that mean difference; None when no variant shares a seed with the baseline."""
    gains = {
        name: statistics.mean(diffs) for name, by_seed in variants.items() if (diffs := paired(by_seed, baseline)[0])
    }
    return max(gains.items(), key=lambda item: item[1]) if gains else None


#: The rule for a new default: a variant's kernel term must add at least RULE_GAIN points over distillation from
#: the soft logits alone (RULE_BASELINE), paired by seed, on test and on validation, each with a paired t >= RULE_T.
RULE_BASELINE, RULE_GAIN, RULE_T = "pkkd_logits", 0.5, 3.0


def default_rule(
    variant: str,
    test: dict[int, float],
    val: dict[int, float],
    baseline_test: dict[int, float],
    baseline_val: dict[int, float],
) -> str:
    """One line: ``variant`` minus the rule's baseline on test and on validation (mean, 95% interval, t over the
    seeds both have, at least two) and whether both clear ``mean >= RULE_GAIN`` with ``t >= RULE_T``."""
    cells, met = [], True
    for split, a, b in (("test", test, baseline_test), ("validation", val, baseline_val)):
        diffs = paired(a, b)[0]
        low, high = interval95(diffs)
        t, mean = t_value(diffs), statistics.mean(diffs)
        met &= mean >= RULE_GAIN and t >= RULE_T
        cells.append(f"{split} {mean:+.2f} (95% interval {low:+.2f} to {high:+.2f}, t = {t:.1f}, {len(diffs)} seeds)")
    verdict = "met" if met else "not met"
    return (
        f"Rule for a new default (>= {RULE_GAIN:+.2f} over {RULE_BASELINE} on test and validation, t >= {RULE_T:g}): "
        f"{variant} {'; '.join(cells)}: {verdict}."
    )


#: The kernel statistics the summary shows, as logged (``train/kernel/<layer>/<name>``).
KERNEL_STATISTICS = ("loss_before_transform", "loss_after_transform", "student_spread", "teacher_spread")


def kernel_statistics_table(arms: Arms, epochs: int) -> str:
    """Per method, the kernel statistics averaged over the distilled layers and seeds, early (steps 0-300) and late
    (1000 on): how far apart the maps are before and after the transform, and how spread out each map is. Empty
    when no run logged any of them."""
    lines = []
    for method, (_, by_seed) in arms.items():
        cells = []
        for name in KERNEL_STATISTICS:
            spans = [
                [logged_mean(run_folder(arms, method, s, epochs), "train/kernel/", f"/{name}", steps) for s in by_seed]
                for steps in ((0, 300), (1000, 10**9))
            ]
            cells.append(" / ".join(_mean_or_dash(values, digits=4) for values in spans))
        if by_seed and any(cell != "- / -" for cell in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    header = [
        "| method | " + " | ".join(f"{name} (early / late)" for name in KERNEL_STATISTICS) + " |",
        "|---" * (1 + len(KERNEL_STATISTICS)) + "|",
    ]
    return "\n".join(header + lines) + "\n"


def _mean_or_dash(values: list[float | None], digits: int = 3) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.mean(known):.{digits}f}" if known else "-"


def plot(out: Path, figure_path: Path, baseline_out: Path = CONVERGENCE_OUT, seed: int = 0) -> None:
    """Along the 24-epoch runs of ``seed``: the feature term's gradient share at the distilled layers, and the
    matching loss after the transform as a fraction of the teacher map's variance (runs that log it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = arms_at(out, baseline_out, EPOCHS)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (method, (_, by_seed)) in enumerate(arms.items()):
        if seed not in by_seed or method == "pkkd_logits":
            continue
        folder = run_folder(arms, method, seed, EPOCHS)
        if shares := diagnosis_series(folder, "train/grad_share/", "/features"):
            left.plot(list(shares), list(shares.values()), marker=".", color=f"C{index}", label=method)
        if unexplained := unexplained_series(folder):
            right.plot(list(unexplained), list(unexplained.values()), marker=".", color=f"C{index}", label=method)
    left.set(xlabel="training step", ylabel="share of the layer's gradient", yscale="log",
             title="Feature term's gradient share (mean of the distilled layers)")  # fmt: skip
    right.axhline(1, color="0.5", lw=0.8)
    right.set(xlabel="training step", ylabel="loss after transform / teacher map variance", ylim=(0, 1.5),
              title="Teacher map variation left unexplained (axis cut at 1.5)")  # fmt: skip
    for axis in (left, right):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(f"Kernel-term variants, 24-epoch protocol, seed {seed}")
    figure.tight_layout()
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(figure_path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = experiment_parser(__doc__, OUT)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="the protocol's length (24 or the headline 48)")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_all(runs(args.variants, args.seeds, args.epochs), args.out, args.jobs, args.threads)
    table = summarize(args.out)
    (REPO / "docs" / "results_kernel_term.md").write_text(table)
    plot(args.out, REPO / "docs" / "figures" / "kernel_term.png")
    print(table)


if __name__ == "__main__":
    main()
