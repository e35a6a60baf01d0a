"""experiments.repeatability: the weight comparison, and a summary that needs no checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiments import repeatability


def _state(scale: float = 1.0) -> dict[str, torch.Tensor]:
    return {
        "student.conv.weight": torch.tensor([1.0, -2.0, 4.0]) * scale,
        "student.bn.running_mean": torch.tensor([5.0]) * scale * scale,
        "teacher.conv.weight": torch.tensor([0.5, 0.25]),
        "teacher.bn.num_batches_tracked": torch.tensor(3),
    }


def test_compare_is_the_largest_weight_change_relative_to_the_reference_and_ignores_batchnorm_statistics():
    reference = _state()
    assert repeatability.compare(reference, reference) == {"student": 0.0, "teacher": 0.0}
    changed = _state(scale=1.5)  # student weights move by 0.5 * |w|: max 2.0 against max |w_ref| 4.0
    changed["teacher.bn.num_batches_tracked"] = torch.tensor(7)
    assert repeatability.compare(changed, reference) == pytest.approx({"student": 0.5, "teacher": 0.0})


def _fake_fit(states: dict[str, dict[str, torch.Tensor]]):
    """Stands in for the ``cli.py fit`` subprocess: writes the given weights as the run's ``last.ckpt``."""

    def fit(command, **_):
        root = Path(command[command.index("--trainer.default_root_dir") + 1])
        setting = list(repeatability.SETTINGS)[int(root.name)]
        (root / "version_0" / "checkpoints").mkdir(parents=True)
        torch.save({"state_dict": states[setting]}, root / "version_0" / "checkpoints" / "last.ckpt")

    return fit


def test_steps_runs_record_their_difference_so_summarize_needs_no_checkpoint(tmp_path, monkeypatch):
    settings = list(repeatability.SETTINGS)
    states = {setting: _state() for setting in settings} | {settings[2]: _state(scale=1.5)}
    monkeypatch.setattr(repeatability.subprocess, "run", _fake_fit(states))
    for setting in settings[:3]:
        repeatability.run("steps", setting, tmp_path, ("--trainer.max_steps", "20"))
    for checkpoint in tmp_path.glob("steps/*/version_0/checkpoints/last.ckpt"):
        checkpoint.unlink()  # as in a fresh clone: checkpoints are not committed
    metrics = repeatability.folder(tmp_path, "demo", settings[0]) / "version_0" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("epoch,step,test/student_acc1,test/teacher_acc1\n7,100,0.9472,0.9861\n")
    (metrics.parents[1] / "done").write_text("{}")

    table = repeatability.summarize(tmp_path)

    assert f"| {settings[0]} | bit-identical | bit-identical |" in table
    assert f"| {settings[1]} | bit-identical | bit-identical |" in table
    assert f"| {settings[2]} | 5.00e-01 | bit-identical |" in table
    assert settings[3] not in table.split("## The whole demo")[0]  # not run: no row
    assert f"| {settings[0]} | 94.72 | 98.61 |" in table
    done = json.loads((repeatability.folder(tmp_path, "steps", settings[2]) / "done").read_text())
    assert done["weight_difference"] == pytest.approx({"student": 0.5, "teacher": 0.0})


def test_a_run_whose_reference_checkpoint_is_gone_says_what_to_do(tmp_path, monkeypatch):
    settings = list(repeatability.SETTINGS)
    monkeypatch.setattr(repeatability.subprocess, "run", _fake_fit({s: _state() for s in settings}))
    repeatability.run("steps", settings[0], tmp_path, ())
    (repeatability.folder(tmp_path, "steps", settings[0]) / "version_0" / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match="delete .* and run it again"):
        repeatability.run("steps", settings[2], tmp_path, ())
