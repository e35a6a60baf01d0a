"""The experiment scripts run end to end in their tiny modes (on the CPU), through cli.py as users run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import gpu_protocol

pytestmark = pytest.mark.slow


def test_the_gpu_protocol_runs_in_tiny_mode_and_writes_its_results(tmp_path: Path):
    from tests.data.conftest import write_image_tree

    data = tmp_path / "cifar10"
    classes = [f"class{i}" for i in range(10)]
    for split in ("train", "test"):
        write_image_tree(data / split, classes, 16 if split == "train" else 4)
    archive = gpu_protocol.pack(data, tmp_path / "cifar10.pack")
    out = tmp_path / "out"
    gpu_protocol.main(["run", str(out), "--pack", str(archive), "--tiny", "--threads", "1"])
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["results"]] == ["cnn", "ann", "pkkd"]
    for result in summary["results"]:
        assert 0.0 <= result["final"]["student_acc1"] <= 1.0
        assert result["best"] is None  # nothing is chosen on the test split
        assert (out / result["name"] / "fit" / "version_0" / "student.pt").is_file()
    assert "teacher_acc1" in summary["results"][2]["final"]
    assert "| pkkd |" in (out / "summary.md").read_text()
