"""Run folders: one exclusive ``version_<n>`` folder per run, and the checkpoints a fit may resume.

* :func:`claim_version` creates ``<root>/version_<n>`` with an exclusive ``mkdir`` (atomic on every filesystem), so
  two fits started together in the same root never share a folder, as they did when the number was chosen by
  listing the folder and creating it later.
* :func:`resumable_checkpoints` lists what ``fit --ckpt_path last`` resumes from (the newest of them): the
  ``last.ckpt`` and ``preempted.ckpt`` files of the run's fixed checkpoint folders and of every version folder under
  its root. A fit without ``--ckpt_path`` resumes nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

_VERSION = re.compile(r"version_(\d+)$")
#: The files a requeued fit resumes from: the end-of-epoch checkpoint and the one written on SIGTERM.
RESUMABLE_NAMES = ("last.ckpt", "preempted.ckpt")


def claim_version(root: str | Path) -> int:
    """Create the lowest free ``<root>/version_<n>`` above the existing ones, exclusively; return ``n``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m[1]) for p in root.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            os.mkdir(root / f"version_{version}")
            return version
        except FileExistsError:  # another run took it between the listing and the mkdir
            version += 1


def resumable_checkpoints(fixed_folders: Iterable[str | Path], root: str | Path) -> list[Path]:
    """Every resumable checkpoint of a run: in its fixed folders and in ``<root>/version_*/checkpoints``."""
    versions = [p / "checkpoints" for p in Path(root).glob("version_*") if _VERSION.match(p.name)]
    folders = list(dict.fromkeys([*map(Path, fixed_folders), *versions]))
    return [folder / name for folder in folders for name in RESUMABLE_NAMES if (folder / name).is_file()]


def newest(paths: Iterable[Path]) -> Path | None:
    """The most recently modified of ``paths`` (``None`` when there are none)."""
    return max(paths, key=lambda p: p.stat().st_mtime, default=None)


def checkpoints_in(folder: str | Path) -> list[Path]:
    """The ``*.ckpt`` files directly in ``folder`` (none if it does not exist)."""
    folder = Path(folder)
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
