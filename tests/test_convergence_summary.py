"""The convergence study's run names per length and its paired summaries, on hand-written ``result.json`` files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from experiments import convergence, summary


def write_result(
    out: Path, name: str, seed: int, test: float, curve: list[float], teacher: float | None = None
) -> None:
    run = out / name
    run.mkdir(parents=True)
    final = {"student_acc1": test} | ({"teacher_acc1": teacher} if teacher is not None else {})
    result = {"seed": seed, "final": final, "val_curve": [[i, v] for i, v in enumerate(curve)]}
    (run / "result.json").write_text(json.dumps(result))


def test_runs_at_another_length_get_their_own_names_and_cosine_end():
    study = convergence.runs(["cnn"], [1])
    shorter = convergence.runs(["cnn", "ann"], [0], epochs=8)
    assert [r.name for r in study] == ["cnn_seed1"]
    assert [r.name for r in shorter] == ["cnn_8ep_seed0", "ann_8ep_seed0"]
    assert shorter[0].args[shorter[0].args.index("--trainer.max_epochs") + 1] == "8"
    assert study[0].args[study[0].args.index("--trainer.max_epochs") + 1] == str(convergence.EPOCHS)


def test_curve_gaps_pair_seeds_and_lengths_are_found(tmp_path: Path):
    write_result(tmp_path, "cnn_seed0", 0, 0.70, [0.50, 0.60])
    write_result(tmp_path, "cnn_seed1", 1, 0.60, [0.10, 0.20])  # no ANN of seed 1: must not enter the gap
    write_result(tmp_path, "ann_seed0", 0, 0.65, [0.40, 0.55])
    write_result(tmp_path, "cnn_8ep_seed0", 0, 0.50, [0.30])
    write_result(tmp_path, "ann_8ep_seed0", 0, 0.40, [0.20])
    results = {m: convergence.load_results(tmp_path, m) for m in convergence.METHODS}

    gaps = convergence.paired_val_gaps(results, "ann", "cnn")
    assert [round(g, 6) for g in gaps] == [-10.0, -5.0]
    assert convergence.paired_val_gaps(results, "pkkd", "cnn") == []
    assert convergence.lengths(tmp_path) == [8, convergence.EPOCHS]

    table = convergence.summarize(convergence.load_study(tmp_path), headline=convergence.EPOCHS)
    assert "| cnn | 8 | 50.00 | 0: 50.00 | - |" in table
    assert f"| cnn | {convergence.EPOCHS} | 65.00 ± 7.07 | 0: 70.00, 1: 60.00 | - |" in table
    assert "| ann - cnn | 8 | -10.00 |" in table
    assert f"| ann - cnn | {convergence.EPOCHS} | -5.00 |" in table
    assert "| pkkd - cnn |" not in table  # no PKKD run: no paired row
    assert "| 8 epochs | 50.00 (1) | -10.00 | - | - |" in table
    assert f"| {convergence.EPOCHS} epochs | 65.00 ± 7.07 (2) | -5.00 | - | - |" in table
    assert "| epoch | cnn val % | ann val % | ann - cnn (paired) |" in table  # only the methods that ran
    assert "| 2 | 40.00 | 55.00 | -5.00 | - | - |" in table  # cnn: mean of both seeds; gap: seed 0
    assert "| 1 | 30.00 | 20.00 | -10.00 | - | - |" in convergence.summarize(
        convergence.load_study(tmp_path), headline=8
    )


def test_mean_val_curve_averages_seeds_up_to_the_shortest_run():
    runs = [{"val_curve": [[0, 0.5], [1, 0.7]]}, {"val_curve": [[0, 0.3]]}]
    assert [round(v, 6) for v in convergence.mean_val_curve(runs)] == [40.0]
    assert convergence.mean_val_curve([]) == []


def test_plot_draws_every_length_and_writes_the_figure(tmp_path: Path):
    write_result(tmp_path, "cnn_seed0", 0, 0.70, [0.50, 0.60])
    write_result(tmp_path, "ann_seed0", 0, 0.65, [0.40, 0.55])
    write_result(tmp_path, "cnn_48ep_seed0", 0, 0.72, [0.45, 0.55, 0.65])
    figure = tmp_path / "figures" / "curves.png"

    drawn = convergence.plot(convergence.load_study(tmp_path), figure, headline=convergence.EPOCHS)

    assert figure.stat().st_size > 0
    curves, gaps = drawn.axes
    assert [line.get_label() for line in curves.lines] == [
        f"cnn, {convergence.EPOCHS} ep (1 seed)",
        f"ann, {convergence.EPOCHS} ep (1 seed)",
        "cnn, 48 ep (1 seed)",
    ]
    assert curves.lines[-1].get_linestyle() == "--"
    assert [round(v, 6) for v in gaps.lines[0].get_ydata()] == [-10.0, -5.0]


def test_study_is_read_per_length_and_any_length_has_every_method(tmp_path: Path):
    write_result(tmp_path, "cnn_8ep_seed0", 0, 0.50, [0.30])
    study = convergence.load_study(tmp_path)
    assert list(study) == [8]
    assert study[8]["cnn"][0]["final"]["student_acc1"] == 0.50
    assert convergence.at_length(study, convergence.EPOCHS) == {m: {} for m in convergence.METHODS}


def test_the_paired_t_and_95_percent_interval_follow_students_t_by_hand():
    diffs = [1.0, 2.0, 3.0]  # mean 2, sd 1, standard error 1 / sqrt(3)
    assert summary.t_value(diffs) == pytest.approx(2 * math.sqrt(3))
    low, high = summary.interval95(diffs)
    half = 4.302653 / math.sqrt(3)  # t quantile 0.975 with 2 degrees of freedom, from a printed table
    assert (low, high) == (pytest.approx(2 - half, abs=1e-5), pytest.approx(2 + half, abs=1e-5))
    assert summary.t_value([-0.5, -0.5]) == -math.inf and summary.t_value([0.0, 0.0]) == 0.0


def test_a_summary_of_runs_kept_elsewhere_is_printed_and_leaves_the_studys_docs_alone(tmp_path: Path, capsys):
    docs = [
        convergence.REPO / "docs" / "results_convergence.md",
        convergence.REPO / "docs" / "figures" / "convergence_curves.png",
    ]
    before = [path.read_bytes() for path in docs]
    write_result(tmp_path, "pkkd_logits_48ep_seed0", 0, 0.6789, [0.5] * 10)
    convergence.main(["summarize", "--out", str(tmp_path)])
    assert "67.89" in capsys.readouterr().out
    assert [path.read_bytes() for path in docs] == before
