"""Atomic writes (pkkd_lightning.atomic_io, checkpoint_io): a failed write leaves the previous file as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pkkd_lightning.atomic_io import atomic_copy, atomic_open, atomic_torch_save, atomic_write
from pkkd_lightning.checkpoint_io import AtomicCheckpointIO


def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"good")

    def half(out) -> None:
        out.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_temporary_file_is_in_the_target_folder(tmp_path: Path):
    folder = tmp_path / "sub"
    with atomic_open(folder / "x.csv", "w") as out:
        out.write("a,b\n")
        staged = [p.name for p in folder.iterdir()]
    assert len(staged) == 1 and staged[0].startswith(".x.csv.tmp-")
    assert [p.name for p in folder.iterdir()] == ["x.csv"] and (folder / "x.csv").read_text() == "a,b\n"


def test_torch_save_copy_and_checkpoint_io_round_trip(tmp_path: Path):
    state = {"w": torch.arange(6.0)}
    atomic_torch_save(state, tmp_path / "a.pt")
    atomic_copy(tmp_path / "a.pt", tmp_path / "b.pt")
    AtomicCheckpointIO().save_checkpoint(state, tmp_path / "c.ckpt")
    for name in ("a.pt", "b.pt", "c.ckpt"):
        torch.testing.assert_close(torch.load(tmp_path / name)["w"], state["w"])
    assert (tmp_path / "b.pt").stat().st_mtime == (tmp_path / "a.pt").stat().st_mtime


def test_only_write_modes_are_accepted(tmp_path: Path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"), atomic_open(tmp_path / "x", "a"):
        pass
