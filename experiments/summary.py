"""Tables and curves from the runner's ``result.json`` files: means, spreads, paired differences by seed."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from scipy import stats


def load_results(out: Path, method: str) -> dict[int, dict]:
    """``{seed: result}`` of every finished run ``<method>_seed<k>`` under ``out``."""
    results = {}
    for path in sorted(out.glob(f"{method}_seed*/result.json")):
        result = json.loads(path.read_text())
        results[result["seed"]] = result
    return results


def final_test(result: dict, network: str = "student") -> float:
    """Top-1 test accuracy (%) of the final weights."""
    return 100 * result["final"][f"{network}_acc1"]


def final_val(result: dict) -> float:
    """Validation accuracy (%) of the student at the last epoch (what the calibration chooses on)."""
    return 100 * result["val_curve"][-1][1]


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` (sample standard deviation), or the single value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], str]:
    """Differences ``a - b`` on the seeds both have, and ``mean (t = ..., df = ...)`` as text."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if len(diffs) < 2:
        return diffs, " ".join(f"{d:+.2f}" for d in diffs) or "n/a"
    per_seed = ", ".join(f"{d:+.2f}" for d in diffs)
    t = t_value(diffs)
    return diffs, f"{statistics.mean(diffs):+.2f} (per seed {per_seed}; t = {t:.1f}, df = {len(diffs) - 1})"


def t_value(diffs: Sequence[float]) -> float:
    """The one-sample t statistic of paired differences, ``mean / (sd / sqrt(n))``; +-inf when all are the same
    non-zero number, 0 when all are 0."""
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    if sd == 0:
        return math.copysign(math.inf, mean) if mean else 0.0
    return mean / (sd / math.sqrt(len(diffs)))


def interval95(diffs: Sequence[float]) -> tuple[float, float]:
    """The two-sided 95% confidence interval of the mean of paired differences,
    ``mean -/+ t_{0.975, n-1} sd / sqrt(n)`` (Student's t with n - 1 degrees of freedom)."""
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return statistics.mean(diffs) - half, statistics.mean(diffs) + half
