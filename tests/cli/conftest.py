"""Fixtures for the command-line tests: ``python cli.py ...`` in a fresh process, run from the repo root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

CliRunner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def run_cli() -> CliRunner:
    """Return a function running ``python cli.py *args`` as a user does: a fresh interpreter, cwd = repo root;
    Python's warnings are silenced unless ``warnings`` is set (then each is printed once, as by default)."""

    def run(
        *args: str, timeout: float = 600, threads: int | None = None, warnings: bool = False
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONWARNINGS": "default" if warnings else "ignore"}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        command = [sys.executable, "cli.py", *args]
        return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(autouse=True)
def _bare_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process ``cli_main(args)`` calls see a bare ``sys.argv``, as a user's ``python cli.py ...`` would, rather
    than pytest's own arguments (LightningCLI warns when both are present)."""
    monkeypatch.setattr(sys, "argv", ["cli.py"])
