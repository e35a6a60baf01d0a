"""Atomic file writes: a file the project writes is either its old version or the complete new one, never half.

The new contents go to a temporary file in the *same folder* (so the final rename never crosses a filesystem,
where it would become a copy), are flushed to disk (``fsync``), and replace the target with ``os.replace``, which
is atomic on POSIX and Windows; the folder is synced too, so the rename survives a power cut. A process killed
half-way leaves the previous file intact and, at worst, a hidden ``.<name>.tmp-*`` file beside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path`` atomically.

    Args:
        path: the file to (re)write; its folder is created if needed.
        mode: ``"wb"`` or ``"w"``.
        kwargs: passed to :func:`open` (``newline``, ``encoding``).

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with open(handle, mode, **kwargs) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk where the platform allows it."""
    with contextlib.suppress(OSError):  # folders cannot be opened for syncing on every platform (Windows)
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(binary_file)`` and put the result at ``path`` atomically; returns ``path``."""
    with atomic_open(path, "wb") as out:
        write(out)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)``, atomically."""
    return atomic_write(path, lambda out: torch.save(obj, out))


def atomic_copy(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` to ``target`` atomically (contents and modification time)."""
    with atomic_open(target, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)
    shutil.copystat(source, target)
    return Path(target)
