"""Two-process DDP on CPU equals one process with the same global batch (see ddp_worker.py for the set-up)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def run_worker(devices: int, out: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(WORKER), "--devices", str(devices), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(f"{out}.initial", weights_only=True), torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    initial, single = run_worker(1, tmp_path / "single.pt")
    initial_ddp, double = run_worker(2, tmp_path / "ddp.pt")
    assert single.keys() == double.keys()
    for key, value in initial.items():
        torch.testing.assert_close(initial_ddp[key], value, rtol=0, atol=0)
    for key, value in single.items():
        torch.testing.assert_close(double[key], value, rtol=1e-4, atol=1e-5, msg=f"{key} differs")
    weights = [k for k in single if k.endswith("conv1.weight") or k.endswith("conv2.weight")]
    moved = [k for k in weights if not torch.allclose(single[k], initial[k], atol=1e-4)]
    assert moved == weights  # training moved every conv and adder layer: the comparison is not vacuous
