"""Tests of atomic checkpoint writes and safe loading."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch

from kiln.checkpoint import CheckpointError, atomic_save, safe_load
from kiln.checkpoint.files import remove_leftover_temporaries


def test_atomic_save_round_trips_tensors_and_plain_data(tmp_path):
    """What atomic_save writes, safe_load reads back equal; no temporary file is left."""
    state = {"weights": torch.arange(4.0), "epoch": 3, "history": [{"loss": 0.5}], "name": "x"}
    path = atomic_save(state, tmp_path / "state.pt")
    loaded = safe_load(path)
    assert torch.equal(loaded["weights"], state["weights"])
    assert loaded["history"] == state["history"]
    assert os.listdir(tmp_path) == ["state.pt"]


def test_atomic_save_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    """A full disk during a write leaves the previous checkpoint whole and no temporary file."""
    path = atomic_save({"version": 1}, tmp_path / "last.pt")

    def full_disk(obj, file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="the disk is full. The previous file"):
        atomic_save({"version": 2}, path)
    monkeypatch.undo()
    assert safe_load(path) == {"version": 1}
    assert os.listdir(tmp_path) == ["last.pt"]


def test_atomic_save_into_a_missing_directory_says_so(tmp_path):
    """Writing where no directory exists raises CheckpointError naming the path."""
    with pytest.raises(CheckpointError, match="Could not write .*missing"):
        atomic_save({}, tmp_path / "missing" / "last.pt")


class Exploit:
    """A pickle payload that would run a command when unpickled."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_safe_load_refuses_a_pickle_that_runs_code(tmp_path, monkeypatch):
    """A crafted pickle is refused with a clear error, and its code never runs."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.ones(1), "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="Refused to load .*could run code"):
        safe_load(path)
    assert not (tmp_path / "pwned").exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="Refused to load"):
        safe_load(raw)
    assert not (tmp_path / "pwned").exists()


def test_safe_load_of_a_missing_file_says_so(tmp_path):
    """Loading a path with no file raises CheckpointError naming it."""
    with pytest.raises(CheckpointError, match="No checkpoint at .*nothing.pt"):
        safe_load(tmp_path / "nothing.pt")


KILLED_WRITE = """
import os, signal, sys
from kiln.checkpoint import atomic_write

def half_then_killed(file):
    file.write(b"half a checkpoint")
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

atomic_write(sys.argv[1], half_then_killed)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_leftovers_of_a_killed_write_are_removed_and_nothing_else(tmp_path):
    """A write killed halfway leaves its temporary file; the cleanup removes it, and only it."""
    folder = tmp_path / "best"
    folder.mkdir()
    killed = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, str(folder / "epoch_1.ckpt")])
    assert killed.wait() == -signal.SIGKILL
    (leftover,) = folder.iterdir()
    assert leftover.name.startswith(".epoch_1.ckpt.kiln-")
    theirs = [  # a user's files and folders, and the file a running process is writing
        folder / ".notes.tmp",
        folder / ".data.1234.tmp",
        folder / "epoch_1.ckpt",
        folder / f".epoch_2.ckpt.kiln-{os.getppid()}.tmp",
    ]
    for path in theirs:
        path.write_bytes(b"keep")
    (folder / f".saved.kiln-{killed.pid}.tmp").mkdir()  # named as ours, but a folder
    assert remove_leftover_temporaries(folder) == [leftover]
    assert sorted(folder.iterdir()) == sorted([*theirs, folder / f".saved.kiln-{killed.pid}.tmp"])
    assert remove_leftover_temporaries(tmp_path / "missing") == []
