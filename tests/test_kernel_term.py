"""The kernel-term study's runs (one suspect changed per variant, on the convergence protocol) and its summary,
on hand-written ``result.json`` and ``metrics.csv`` files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from experiments import convergence, kernel_term
from tests.test_convergence_summary import write_result


def write_shares(run: Path, shares: dict[int, float], spreads: dict[int, float] | None = None) -> None:
    """A run's metrics.csv with the feature term's gradient share (and the student map's spread) at some steps."""
    folder = run / "fit" / "version_0"
    folder.mkdir(parents=True)
    spreads = spreads or {}
    rows = "".join(f"{step},0,{value},{spreads.get(step, '')}\n" for step, value in shares.items())
    header = "step,epoch,train/grad_share/layer1.2.conv2/features,train/kernel/layer1.2.conv2/student_spread\n"
    (folder / "metrics.csv").write_text(header + rows)


def test_each_variant_is_the_calibrated_pkkd_on_the_convergence_protocol_with_one_change():
    runs = {run.name: run for run in kernel_term.runs()}
    assert set(runs) == {f"{v}_seed0" for v in kernel_term.VARIANTS}
    for run in runs.values():
        assert run.config == convergence.CONFIG and run.args[: len(convergence.NEW_PKKD)] == convergence.NEW_PKKD
        assert run.args[run.args.index("--trainer.max_epochs") + 1] == str(convergence.EPOCHS)
    assert runs["pkkd_notransform_seed0"].args[len(convergence.NEW_PKKD) :][:2] == ("--model.linear_transform", "false")
    assert runs["pkkd_centered_seed0"].args[len(convergence.NEW_PKKD) :][:2] == ("--model.centering", "channel")


def test_a_longer_protocol_is_named_and_run_as_the_convergence_study_names_its_lengths():
    (run,) = kernel_term.runs(["pkkd_notransform"], [2], epochs=48)
    assert run.name == "pkkd_notransform_48ep_seed2" and run.seed == 2
    assert run.args[run.args.index("--trainer.max_epochs") + 1] == "48"
    (baseline,) = convergence.runs(["pkkd"], [2], epochs=48)
    assert baseline.name == "pkkd_48ep_seed2"


def test_summary_pairs_variants_with_the_baselines_by_seed_and_reads_the_gradient_shares(tmp_path: Path):
    baselines, variants = tmp_path / "convergence", tmp_path / "kernel_term"
    curve = [0.5] * 10
    write_result(baselines, "pkkd_seed0", 0, 0.62, curve)
    write_result(baselines, "pkkd_seed1", 1, 0.64, curve)
    write_result(baselines, "pkkd_logits_seed0", 0, 0.61, [0.4] * 10)
    write_result(variants, "pkkd_lam1_seed0", 0, 0.65, [0.6] * 10)
    write_shares(variants / "pkkd_lam1_seed0", {100: 0.2, 200: 0.4, 1100: 0.01, 1800: 0.03}, {100: 0.3, 1100: 0.1})
    table = kernel_term.summarize(variants, baselines)
    kernel_rows = table.rstrip().split("\n\n")[-1].splitlines()[2:]  # the last table: runs with kernel statistics
    assert kernel_rows == ["| pkkd_lam1 | - / - | - / - | 0.3000 / 0.1000 | - / - |"]
    lam1 = next(line for line in table.splitlines() if line.startswith("| pkkd_lam1 |"))
    assert "| 0 | 65.00 | 60.00 | +3.00 / +10.00 | +4.00 / +20.00 | 0.300 | 0.020 |" in lam1
    pkkd = next(line for line in table.splitlines() if line.startswith("| pkkd |"))
    assert "| 0, 1 | 63.00 |" in pkkd and "| - |" in pkkd and pkkd.endswith("| - | - | -, - |")
    assert "Highest on validation (paired with pkkd): pkkd_lam1 (+10.00)." in table


def test_each_length_is_summarised_against_the_baselines_of_that_length(tmp_path: Path):
    baselines, variants = tmp_path / "convergence", tmp_path / "kernel_term"
    write_result(baselines, "pkkd_seed0", 0, 0.62, [0.5] * 10)
    write_result(baselines, "pkkd_48ep_seed0", 0, 0.70, [0.7] * 10)
    write_result(variants, "pkkd_lam1_seed0", 0, 0.65, [0.6] * 10)
    write_result(variants, "pkkd_notransform_seed0", 0, 0.60, [0.4] * 10)
    write_result(variants, "pkkd_notransform_48ep_seed0", 0, 0.71, [0.72] * 10)
    short, long = kernel_term.summarize(variants, baselines).split("48 epochs:")
    assert short.startswith("24 epochs:") and "| pkkd_notransform | 0 | 60.00 | 40.00 | -2.00 / -10.00 |" in short
    assert "pkkd_lam1 (+10.00)" in short
    assert "| pkkd_notransform | 0 | 71.00 | 72.00 | +1.00 / +2.00 |" in long and "pkkd_lam1" not in long
    assert "| pkkd | 0 | 70.00 |" in long and "pkkd_notransform (+2.00)" in long


def test_a_length_whose_runs_logged_no_kernel_statistics_shows_no_kernel_statistics_table(tmp_path: Path):
    baselines, variants = tmp_path / "convergence", tmp_path / "kernel_term"
    write_result(baselines, "pkkd_seed0", 0, 0.62, [0.5] * 10)
    write_result(variants, "pkkd_lam1_seed0", 0, 0.65, [0.6] * 10)
    write_shares(variants / "pkkd_lam1_seed0", {100: 0.2, 1100: 0.01})  # gradient shares, no kernel statistics
    table = kernel_term.summarize(variants, baselines)
    assert "| pkkd_lam1 | 0 | 65.00 |" in table and "student_spread" not in table
    assert table.rstrip().endswith("Highest on validation (paired with pkkd): pkkd_lam1 (+10.00).")


def test_the_highest_on_validation_is_paired_by_seed_and_needs_a_shared_seed():
    baseline = {0: 60.0, 1: 70.0}
    variants = {"a": {0: 61.0, 1: 70.0}, "b": {1: 70.8}, "c": {5: 99.0}}
    assert kernel_term.highest_on_validation(variants, baseline) == ("b", pytest.approx(0.8))
    assert kernel_term.highest_on_validation({"c": {5: 99.0}}, baseline) is None


def test_weight_decay_alone_follows_the_runs_sgd():
    from experiments.kernel_channels import weight_decay_alone
    from pkkd_lightning import PKKDModule

    constant = PKKDModule("resnet20", 10, lr=0.1, momentum=0.0, weight_decay=1e-2, lr_schedule="constant")
    assert weight_decay_alone(constant, 7) == pytest.approx((1 - 0.1 * 1e-2) ** 7)
    assert weight_decay_alone(PKKDModule("resnet20", 10, weight_decay=0.0), 50) == 1.0
    # momentum 0.9 carries each step's decay on: ten times the decay of plain SGD, nearly
    with_momentum = PKKDModule("resnet20", 10, lr=0.01, momentum=0.9, weight_decay=1e-3, lr_schedule="constant")
    assert weight_decay_alone(with_momentum, 2000) == pytest.approx(math.exp(-2000 * 0.01 * 1e-3 * 10), rel=0.02)


def test_a_value_repeated_at_later_logging_steps_is_read_once_at_its_diagnosis_step(tmp_path: Path):
    # How runs logged before the fix look: the step-0 value again at steps 24 and 49, the step-100 one at 124.
    write_shares(tmp_path, {24: 0.2, 49: 0.2, 74: 0.2, 124: 0.5, 149: 0.5, 1100: 0.01})
    assert kernel_term.diagnosis_series(tmp_path, "train/grad_share/", "/features") == {0: 0.2, 100: 0.5, 1100: 0.01}
    assert kernel_term.feature_share(tmp_path, (0, 300)) == pytest.approx(0.35)


def test_the_unexplained_fraction_is_the_loss_over_the_teacher_variance_per_layer_and_is_plotted(tmp_path: Path):
    write_result(tmp_path / "kernel_term", "pkkd_lam1_seed0", 0, 0.65, [0.6] * 10)
    run = tmp_path / "kernel_term" / "pkkd_lam1_seed0"
    folder = run / "fit" / "version_0"
    folder.mkdir(parents=True)
    columns = [
        f"train/kernel/{layer}/{stat}" for layer in ("a", "b") for stat in ("loss_after_transform", "teacher_spread")
    ]
    rows = ["0,0,0.04,0.2,0.01,0.1", "100,1,0.02,0.2,0.01,0.2"]
    (folder / "metrics.csv").write_text("step,epoch," + ",".join(columns) + "\n" + "\n".join(rows) + "\n")
    assert kernel_term.unexplained_series(run) == {0: pytest.approx(1.0), 100: pytest.approx((0.5 + 0.25) / 2)}
    kernel_term.plot(tmp_path / "kernel_term", tmp_path / "figure.png", tmp_path / "convergence")
    assert (tmp_path / "figure.png").stat().st_size > 0


def test_the_default_rule_asks_for_half_a_point_over_logits_only_on_both_splits_with_t_of_three():
    logits = {0: 70.0, 1: 71.0, 2: 72.0}
    clear = {0: 71.0, 1: 72.1, 2: 72.9}  # +1.0, +1.1, +0.9: t = 17.3
    rule = kernel_term.default_rule("v", clear, clear, logits, logits)
    assert rule.endswith(": met.") and "test +1.00 (95% interval +0.75 to +1.25, t = 17.3, 3 seeds)" in rule
    noisy = {0: 72.0, 1: 71.0, 2: 72.5}  # +2.0, 0.0, +0.5: mean +0.83 but t = 1.4
    assert kernel_term.default_rule("v", clear, noisy, logits, logits).endswith(": not met.")
    small = {0: 70.3, 1: 71.3, 2: 72.35}  # +0.3, +0.3, +0.35: t large, gain below half a point
    assert kernel_term.default_rule("v", small, clear, logits, logits).endswith(": not met.")


def test_the_summary_states_the_rule_only_for_variants_with_two_paired_seeds(tmp_path: Path):
    baselines, variants = tmp_path / "convergence", tmp_path / "kernel_term"
    for seed, (logits, variant) in enumerate([(0.70, 0.71), (0.71, 0.72), (0.72, 0.735)]):
        write_result(baselines, f"pkkd_48ep_seed{seed}", seed, 0.70, [0.7] * 10)
        write_result(baselines, f"pkkd_logits_48ep_seed{seed}", seed, logits, [logits] * 10)
        write_result(variants, f"pkkd_notransform_48ep_seed{seed}", seed, variant, [variant] * 10)
    write_result(variants, "pkkd_lam1_48ep_seed0", 0, 0.90, [0.9] * 10)
    table = kernel_term.summarize(variants, baselines)
    rules = [line for line in table.splitlines() if line.startswith("Rule for a new default")]
    assert len(rules) == 1 and "pkkd_notransform test +1.17" in rules[0] and rules[0].endswith(": met.")


def test_the_teachers_per_seed_show_whether_two_runs_shared_an_environment(tmp_path: Path):
    baselines, variants = tmp_path / "convergence", tmp_path / "kernel_term"
    write_result(baselines, "pkkd_seed0", 0, 0.62, [0.5] * 10, teacher=0.6935)
    write_result(baselines, "pkkd_seed1", 1, 0.64, [0.5] * 10, teacher=0.6829)
    write_result(variants, "pkkd_lam1_seed0", 0, 0.65, [0.6] * 10, teacher=0.6847)
    table = kernel_term.summarize(variants, baselines)
    assert next(line for line in table.splitlines() if line.startswith("| pkkd |")).endswith("| 69.35, 68.29 |")
    assert next(line for line in table.splitlines() if line.startswith("| pkkd_lam1 |")).endswith("| 68.47 |")
    lines = table.splitlines()
    for header, rule, row in zip(lines, lines[1:], lines[2:]):
        if rule.startswith("|---"):  # a markdown table renders only when its rows have the header's cell count
            assert header.count("|") == rule.count("|") == (row.count("|") if row.startswith("|") else rule.count("|"))


def test_a_baseline_run_again_beside_the_variants_is_read_in_place_of_the_convergence_studys(tmp_path: Path):
    baselines, variants = tmp_path / "convergence", tmp_path / "kernel_term"
    write_result(baselines, "pkkd_logits_48ep_seed0", 0, 0.70, [0.7] * 10, teacher=0.72)
    write_result(baselines, "pkkd_logits_48ep_seed1", 1, 0.70, [0.7] * 10, teacher=0.72)
    write_result(variants, "pkkd_logits_48ep_seed0", 0, 0.68, [0.7] * 10, teacher=0.71)
    write_result(variants, "pkkd_notransform_48ep_seed0", 0, 0.69, [0.7] * 10, teacher=0.71)
    arms = kernel_term.arms_at(variants, baselines, 48)
    assert arms["pkkd_logits"][0] == variants and list(arms["pkkd_logits"][1]) == [0]
    assert arms["pkkd"] == (baselines, {})
    row = next(
        line for line in kernel_term.summarize(variants, baselines).splitlines() if "| pkkd_notransform |" in line
    )
    assert row.endswith("| +1.00 / +0.00 | - | - | 71.00 |")  # paired with the run on its own machine (same teacher)
