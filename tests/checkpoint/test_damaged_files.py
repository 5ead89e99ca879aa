"""Checkpoint files that are damaged, or declare more than they hold: one clear error, no memory.

Every reader of checkpoint files (`safe_load`, `load_weights`, `fit(resume=True)`,
`Trainer.test`, sharded checkpoints) answers a damaged file with one `CheckpointError` that names
it and says what is wrong, and refuses a small file that declares a huge tensor before anything
allocates it.
"""

from __future__ import annotations

import copy
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import kiln
from kiln.checkpoint import CheckpointError, load_weights, safe_load

X, Y = torch.randn(32, 3), torch.randn(32, 1)


def trainer_in(directory: Path) -> kiln.Trainer:
    torch.manual_seed(0)
    return kiln.Trainer(
        nn.Linear(3, 1), "mse", "sgd", lr=0.01, dir=directory, device="cpu", progress=False
    )


def run_in(directory: Path) -> Path:
    """A run of two epochs in `directory`; its `last.ckpt`."""
    trainer_in(directory).fit((X, Y), val=(X, Y), epochs=2, batch_size=8)
    return directory / "last.ckpt"


def flip_in_pickle(data: bytes) -> bytes:
    """`data` with one bit flipped in the middle of its pickle (data.pkl)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        member = next(m for m in archive.infolist() if m.filename.endswith("data.pkl"))
    at = member.header_offset
    start = at + 30 + int.from_bytes(data[at + 26 : at + 28], "little")
    start += int.from_bytes(data[at + 28 : at + 30], "little")
    position = start + member.file_size // 2
    return data[:position] + bytes([data[position] ^ 0x10]) + data[position + 1 :]


def damage(path: Path, kind: str) -> None:
    """Damage the checkpoint at `path` in place, in one of the ways files get damaged."""
    data = path.read_bytes()
    if kind == "directory":
        path.unlink()
        path.mkdir()
        return
    if kind == "list":
        torch.save([1, 2, 3], path)
        return
    damaged = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "text": b"epoch\tloss\n1\t0.5\n",
        "flipped": flip_in_pickle(data) if kind == "flipped" else b"",
    }
    path.write_bytes(damaged[kind])


KINDS = ["empty", "truncated", "text", "flipped", "list", "directory"]


def expect_damaged(path: Path, raised: pytest.ExceptionInfo[CheckpointError]) -> None:
    message = str(raised.value)
    assert str(path) in message
    words = ("is damaged", "is a directory", "no model weights", "but model weights are")
    assert any(word in message for word in words), message


@pytest.mark.parametrize("kind", KINDS)
def test_safe_load_and_load_weights_name_a_damaged_file(tmp_path, kind):
    path = tmp_path / "weights.pt"
    torch.save(nn.Linear(3, 1).state_dict(), path)
    damage(path, kind)
    if kind != "list":  # a list is a readable file; it only holds the wrong thing
        with pytest.raises(CheckpointError) as raised:
            safe_load(path)
        expect_damaged(path, raised)
    with pytest.raises(CheckpointError) as raised:
        load_weights(path)
    expect_damaged(path, raised)


@pytest.mark.parametrize("kind", KINDS)
def test_resume_from_a_damaged_last_checkpoint_names_it_and_changes_nothing(tmp_path, kind):
    last = run_in(tmp_path)
    damage(last, kind)
    trainer = trainer_in(tmp_path)
    before = copy.deepcopy(trainer.model.state_dict())
    with pytest.raises(CheckpointError) as raised:
        trainer.fit((X, Y), epochs=3, batch_size=8, resume=True)
    expect_damaged(last, raised)
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert trainer.state.epoch == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("rng"), r"it has no 'rng'"),
        (lambda s: s.pop("callbacks"), r"it has no 'callbacks'"),
        (lambda s: s.update(state=[1, 2]), r"'state' is a list, where the counters"),
        (lambda s: s["state"].update(epoch="2"), r"'state' is a dict, where the counters"),
        (lambda s: s.update(history={"epochs": 3}), r"'history' is a dict, where the history"),
        (lambda s: s.update(callbacks={"a": 1}), r"'callbacks' is a dict, where a list"),
        (lambda s: s.update(model={"weight": 1.0}), r"'model' is a dict, where a dict of tensors"),
        (lambda s: s.update(optimizer=[]), r"'optimizer' is a list, where None or an optim"),
        (lambda s: s["rng"].update(numpy=None), r"NumPy's generator state is not"),
        (lambda s: s["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)), r"torch's gener"),
        (lambda s: s.update(position={"batches": "4"}), r"'position' is a dict, where None"),
    ],
)
def test_resume_checks_every_part_of_the_checkpoint_first(tmp_path, change, message):
    last = run_in(tmp_path)
    state = torch.load(last, weights_only=True)
    change(state)
    torch.save(state, last)
    trainer = trainer_in(tmp_path)
    before = copy.deepcopy(trainer.model.state_dict())
    with pytest.raises(CheckpointError, match=rf"{last} is damaged or was not written.*{message}"):
        trainer.fit((X, Y), epochs=3, batch_size=8, resume=True)
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


@pytest.mark.parametrize("kind", ["empty", "text", "directory"])
def test_trainer_test_names_a_damaged_checkpoint(tmp_path, kind):
    last = run_in(tmp_path)
    damage(last, kind)
    with pytest.raises(CheckpointError) as raised:
        trainer_in(tmp_path).test((X, Y), checkpoint="last")
    expect_damaged(last, raised)


def test_a_stride_0_tensor_of_2_31_elements_is_refused_before_any_copy(tmp_path):
    """13 KB that would become 8 GB: the count of values must be backed by the storage."""
    path = tmp_path / "expanded.pt"
    torch.save({"keys": torch.zeros(1, dtype=torch.int64).expand(2**31)}, path)
    assert path.stat().st_size < 20_000
    message = rf"Refused to load {path}: .*2147483648 elements \(17179869184 bytes\) over only 8"
    with pytest.raises(CheckpointError, match=message):
        safe_load(path)


def test_resume_refuses_expanded_generator_states_before_restoring_anything(tmp_path):
    last = run_in(tmp_path)
    state: dict[str, Any] = torch.load(last, weights_only=True)
    state["rng"]["numpy"][1] = torch.zeros(1, dtype=torch.int64).expand(2**20)
    torch.save(state, last)
    with pytest.raises(CheckpointError, match=r"Refused to load .*1048576 elements"):
        trainer_in(tmp_path).fit((X, Y), epochs=3, batch_size=8, resume=True)


def test_a_pickle_that_allocates_from_declared_sizes_is_refused(tmp_path):
    """`bytearray(n)` is allowed by torch's reader, and allocates n bytes before any check."""
    path = tmp_path / "bytes.pt"
    torch.save({"weight": torch.ones(2), "buffer": bytearray(8)}, path)
    with pytest.raises(CheckpointError, match=r"Refused to load .*calls builtins\.bytearray"):
        safe_load(path)


def test_records_that_declare_more_than_the_file_holds_are_refused(tmp_path):
    """A compressed record of 40 MB in a file of a few KB is refused before it is inflated."""
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(10_000_000)}, plain)
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(packed, "w") as target:
        for member in source.infolist():
            target.writestr(member.filename, source.read(member), zipfile.ZIP_DEFLATED)
    plain.unlink()
    size = packed.stat().st_size
    assert size < 200_000
    message = rf"{packed} is damaged .*declare 4000\d+ bytes of data, more than the {size} bytes"
    with pytest.raises(CheckpointError, match=message):
        safe_load(packed)


def test_a_storage_bigger_than_the_file_is_refused(tmp_path):
    """A pickle may ask torch for an uninitialised tensor of any size: torch.Tensor(n)."""
    path = tmp_path / "state.pt"
    torch.save({"weight": torch.ones(2)}, path)
    # NEWOBJ torch.Tensor with the argument 2**24: 64 MB of storage from a pickle of 30 bytes.
    hostile = b"\x80\x02ctorch\nTensor\nq\x00J\x00\x00\x00\x01\x85q\x01\x81q\x02."
    rewritten = tmp_path / "hostile.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w") as target:
        for member in source.infolist():
            data = source.read(member)
            target.writestr(member, hostile if member.filename.endswith("data.pkl") else data)
    with pytest.raises(CheckpointError, match=r"Refused to load .*storage declares 67108864 b"):
        safe_load(rewritten)


def test_a_damaged_sharded_checkpoint_names_its_file(tmp_path):
    from kiln.distributed.dcp import load_sharded, save_sharded

    net = nn.Linear(3, 1)
    path = save_sharded(tmp_path, net, extra={"epoch": 1})
    torch.save([1, 2], path / "trainer.pt")
    with pytest.raises(CheckpointError, match=r"trainer\.pt is damaged or was not written by"):
        load_sharded(tmp_path, net)
    (path / "trainer.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"trainer\.pt is damaged .*empty"):
        load_sharded(tmp_path, net)


def test_an_intact_checkpoint_still_loads_and_resumes(tmp_path):
    """What kiln writes passes every check: weights, the trainer's state, a resumed run."""
    last = run_in(tmp_path)
    assert set(load_weights(last)) == {"weight", "bias"}
    trainer = trainer_in(tmp_path)
    trainer.fit((X, Y), val=(X, Y), epochs=3, batch_size=8, resume=True)
    assert trainer.state.epoch == 3
