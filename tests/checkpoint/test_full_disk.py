"""A disk that fills up inside `torch.save`: the promised error, and the previous file intact."""

from __future__ import annotations

import errno
import io
import os

import pytest
import torch

from kiln.checkpoint import CheckpointError, atomic_save, safe_load


class FillingDisk(io.RawIOBase):
    """A file that takes `room` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, file: io.BufferedWriter, room: int) -> None:
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)


@pytest.mark.parametrize("room", [0, 100, 2_000])
def test_a_disk_full_inside_torch_save_says_so_and_keeps_the_previous_file(
    tmp_path, monkeypatch, room
):
    """torch's zip writer turns the ENOSPC into `RuntimeError: ... unexpected pos`.

    Unless the very first write fails (room 0): that one torch lets through as the OSError.
    """
    path = atomic_save({"version": 1}, tmp_path / "last.ckpt")
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, file: real_save(obj, FillingDisk(file, room)))
    message = rf"Could not write {path}: the disk is full\. The previous file there, if any, is"
    with pytest.raises(CheckpointError, match=message) as raised:
        atomic_save({"version": 2, "weights": torch.zeros(10_000)}, path)
    assert raised.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert safe_load(path) == {"version": 1}
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_other_errors_inside_torch_save_are_not_disguised(tmp_path, monkeypatch):
    def broken(obj, file):
        raise RuntimeError("a bug, not the disk")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="a bug, not the disk"):
        atomic_save({}, tmp_path / "state.pt")
    assert os.listdir(tmp_path) == []
