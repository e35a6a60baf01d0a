"""What makes the demo's numbers differ between machines: one machine, one setting changed at a time.

The digits demo (``configs/digits_pkkd.yaml``) gives the same numbers every time on one machine, and other numbers
on another. Candidates: the number of CPU threads (a reduction split over threads sums in another order), the
vector instructions PyTorch's and oneDNN's kernels pick for the CPU (AVX-512 against AVX2: another blocking, so
another summation order in convolutions, their weight gradients and BatchNorm), and the native adder kernels'
build target (``-march=native``). Each setting below changes one of them on this machine:

* ``steps``: 20 training steps of the demo per setting (twice for the default, to check that a rerun is
  bit-identical); the final weights are compared with the default setting's, bit for bit;
* ``demo``: the whole demo per setting; its test accuracies are the range a user should expect.

Usage::

    python -m experiments.repeatability steps    # about 5 minutes on 2 cores
    python -m experiments.repeatability demo     # about 4 x 10-15 minutes on 2 cores
    python -m experiments.repeatability summarize   # docs/results_repeatability.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from experiments.runner import REPO
from pkkd_lightning.analysis import read_metrics_csv

OUT = REPO / "experiments" / "results" / "repeatability"
DEMO = "configs/digits_pkkd.yaml"
SETTINGS: dict[str, dict[str, str]] = {
    "default (2 threads, host vector kernels, native adder build)": {"OMP_NUM_THREADS": "2"},
    "default, run again": {"OMP_NUM_THREADS": "2"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "AVX2 kernels in PyTorch and oneDNN": {
        "OMP_NUM_THREADS": "2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },  # fmt: skip
    "adder kernels built for generic x86-64-v2": {"OMP_NUM_THREADS": "2", "PKKD_LIGHTNING_MARCH": "x86-64-v2"},
}
DEFAULT = next(iter(SETTINGS))  # the reference every other setting is compared with; runs first


def folder(out: Path, kind: str, setting: str) -> Path:
    """Where ``setting``'s ``kind`` run (``steps`` or ``demo``) writes."""
    return out / kind / str(list(SETTINGS).index(setting))


def run(kind: str, setting: str, out: Path, extra: tuple[str, ...]) -> Path:
    """``cli.py fit`` of the demo under ``setting``'s environment (skipped when its folder is complete).

    A ``steps`` run records its weights' difference from the default setting's (which runs first) in its ``done``
    file, so ``summarize`` needs no checkpoint (they are not committed)."""
    root = folder(out, kind, setting)
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **SETTINGS[setting]}
    command = [sys.executable, "cli.py", "fit", "--config", DEMO, "--trainer.default_root_dir", str(root), *extra]
    with (root.parent / f"{root.name}.log").open("w") as log:
        subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=log, check=True)
    record = {"setting": setting, "env": SETTINGS[setting], "command": command[1:]}
    if kind == "steps":
        state = final_state(root)
        reference = state if setting == DEFAULT else final_state(folder(out, "steps", DEFAULT))
        record["weight_difference"] = compare(state, reference)
    (root / "done").write_text(json.dumps(record))
    return root


def final_state(root: Path) -> dict[str, torch.Tensor]:
    """The weights of the run in ``root`` (its ``last.ckpt``)."""
    path = root / "version_0" / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: delete {root} and run it again (checkpoints are not committed)")
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def compare(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, float]:
    """Largest relative difference ``max |w - w_ref| / max |w_ref|`` over each network's weight tensors (0.0 =
    bit-identical; BatchNorm statistics left out, they follow the weights)."""
    result = {}
    for network in ("student", "teacher"):
        keys = [k for k in reference if k.startswith(f"{network}.") and not k.endswith(BUFFERS)]
        result[network] = max(
            ((state[k] - reference[k]).abs().max() / reference[k].abs().max().clamp_min(1e-30)).item() for k in keys
        )
    return result


def summarize(out: Path) -> str:
    """The two tables of docs/results_repeatability.md, from the ``done`` files and the demos' metrics."""
    lines = ["## 20 training steps: largest relative weight difference from the default setting", "",
             "| setting | student (ANN) | teacher (CNN) |", "|---|---|---|"]  # fmt: skip
    for setting in SETTINGS:
        done = folder(out, "steps", setting) / "done"
        if done.exists():
            difference = json.loads(done.read_text())["weight_difference"]
            cells = ["bit-identical" if v == 0 else f"{v:.2e}" for v in difference.values()]
            lines.append(f"| {setting} | {cells[0]} | {cells[1]} |")
    lines += ["", "## The whole demo: test accuracy of the best checkpoint (test_after_fit)", "",
              "| setting | student % | teacher % |", "|---|---|---|"]  # fmt: skip
    for setting in SETTINGS:
        metrics = folder(out, "demo", setting) / "version_0" / "metrics.csv"
        if (metrics.parents[1] / "done").exists():
            series = read_metrics_csv(metrics)
            student, teacher = (100 * series[f"test/{n}_acc1"][-1].value for n in ("student", "teacher"))
            lines.append(f"| {setting} | {student:.2f} | {teacher:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("steps", "demo", "summarize"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.command == "steps":
        for setting in SETTINGS:
            run("steps", setting, args.out, ("--trainer.max_steps", "20", "--test_after_fit", "false"))
    elif args.command == "demo":
        for setting in SETTINGS:
            if setting != "default, run again":
                run("demo", setting, args.out, ())
    table = summarize(args.out)
    (REPO / "docs" / "results_repeatability.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
