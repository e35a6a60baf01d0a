"""A thin, resumable runner for experiments made of user runs: ``python cli.py fit`` then ``python cli.py test``.

Every run is what a user would type: a config file and command-line overrides, run from the repository root in
a fresh process. A run's folder holds

* ``command.txt``: the exact ``fit`` and ``test`` command lines;
* ``fit/version_<n>/``: the CLI's own log folders (``metrics.csv``, ``config.yaml``, ``hparams.yaml``; a
  resumed run adds a version), with the checkpoints (not committed);
* ``fit.log``, ``test_final.log``, ``test_best.log``: the processes' output;
* ``result.json``: the final weights' and the best checkpoint's test accuracy (the best is chosen on the
  validation split the config holds out), the validation curve, and wall-clock times.

A run with a ``result.json`` is skipped; an interrupted one resumes from its newest ``last.ckpt``. Runs go to a
pool of ``jobs`` worker processes, each limited to ``threads`` CPU threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pkkd_lightning.analysis import read_metrics_csv, read_run_metrics
from pkkd_lightning.run_dirs import newest

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO.parent / "shared" / "data" / "cifar10-jpeg"


@dataclass(frozen=True)
class Run:
    """One user run: ``cli.py fit --config <config> <args> --seed_everything <seed>``.

    Attributes:
        name: the run's folder name (unique within an experiment).
        config: config file, relative to the repository root.
        args: command-line overrides after the config.
        seed: the global seed.
        test_args: overrides for the two ``test`` runs (for example the full test split).
    """

    name: str
    config: str
    args: tuple[str, ...]
    seed: int
    test_args: tuple[str, ...] = field(default=())


def _cli(args: Sequence[str], log: Path, threads: int) -> float:
    """Run ``python cli.py *args`` from the repository root; append its output to ``log``; return seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    start = time.time()
    with log.open("a") as out:
        out.write(f"$ python cli.py {' '.join(args)}\n")
        out.flush()
        result = subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, env=env, stdout=out, stderr=out)
    if result.returncode != 0:
        raise RuntimeError(f"python cli.py {' '.join(args)} failed with code {result.returncode}; see {log}")
    return time.time() - start


def _test_accuracy(run: Run, run_dir: Path, ckpt: Path, label: str, threads: int) -> dict[str, float]:
    """Test ``ckpt`` in a fresh process; its metrics come from the ``metrics.csv`` of the new log folder."""
    root = run_dir / f"test_{label}"
    args = ["test", "--config", run.config, *run.args, *run.test_args, "--ckpt_path", str(ckpt)]
    args += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    _cli(args, run_dir / f"test_{label}.log", threads)
    metrics = read_metrics_csv(newest(list(root.glob("version_*/metrics.csv"))))
    return {name.split("/", 1)[1]: series[-1].value for name, series in metrics.items() if name.startswith("test/")}


def validation_curve(run_dir: Path, metric: str = "val/student_acc1") -> list[tuple[int, float]]:
    """``(epoch, value)`` of ``metric`` over the fit's log folders (a resumed run's folders in order)."""
    return [(p.epoch, p.value) for p in read_run_metrics(run_dir / "fit").get(metric, []) if p.epoch is not None]


def run_one(run: Run, out: Path, threads: int = 1) -> dict:
    """Fit (or resume) and test one run; return its ``result.json`` contents."""
    run_dir = out / run.name
    result_path = run_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    fit_args = ["fit", "--config", run.config, *run.args, "--seed_everything", str(run.seed)]
    fit_args += ["--trainer.default_root_dir", str(run_dir / "fit"), "--trainer.enable_progress_bar", "false"]
    (run_dir / "command.txt").write_text(
        "python cli.py " + " ".join(fit_args) + "\n"
        + "python cli.py test --config " + " ".join([run.config, *run.args, *run.test_args])
        + " --ckpt_path <last.ckpt | best-epoch*.ckpt>\n"
    )  # fmt: skip
    last = newest(list(run_dir.glob("fit/version_*/checkpoints/last.ckpt")))
    resume = ["--ckpt_path", str(last)] if last is not None else []
    fit_seconds = _cli([*fit_args, *resume], run_dir / "fit.log", threads)
    last = newest(list(run_dir.glob("fit/version_*/checkpoints/last.ckpt")))
    best = newest(list(run_dir.glob("fit/version_*/checkpoints/best-epoch*.ckpt")))
    result = {
        "name": run.name,
        "seed": run.seed,
        "final": _test_accuracy(run, run_dir, last, "final", threads),
        "best": _test_accuracy(run, run_dir, best, "best", threads) if best else None,
        "best_checkpoint": best.name if best else None,
        "val_curve": validation_curve(run_dir),
        "teacher_val_curve": validation_curve(run_dir, "val/teacher_acc1"),
        "fit_seconds_last_part": fit_seconds,
        "threads": threads,
    }
    result_path.write_text(json.dumps(result, indent=2))
    return result


def run_all(runs: Sequence[Run], out: Path, jobs: int = 2, threads: int = 1) -> list[dict]:
    """Run ``runs`` on ``jobs`` workers, in order of submission; print each result as it finishes."""
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")

    def work(run: Run) -> dict:
        result = run_one(run, out, threads)
        print(json.dumps({"name": run.name, "final": result["final"]}), flush=True)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(work, runs))


def experiment_parser(doc: str, out: Path) -> argparse.ArgumentParser:
    """The command line every experiment script shares: ``run``/``summarize``, ``--out``, ``--jobs``, ``--threads``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("command", choices=("run", "summarize"))
    parser.add_argument("--out", type=Path, default=out, help="the experiment's results folder")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    return parser
