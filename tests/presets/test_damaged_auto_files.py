"""AutoTrainer.load of a damaged `{name}.pt`: one `CheckpointError` that names the file."""

from __future__ import annotations

import pytest
import torch

import kiln
from kiln.checkpoint import CheckpointError
from kiln.checkpoint.files import atomic_save
from kiln.presets import AutoTrainer
from kiln.presets.files import auto_record


def damaged(tmp_path, kind):
    path = tmp_path / "run.pt"
    atomic_save(auto_record(kiln.MLP(3, [8], 2), None, epoch=1), path)
    data = path.read_bytes()
    if kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "no weights":
        record = torch.load(path, weights_only=True)
        record["model"] = [1, 2]
        torch.save(record, path)
    else:
        path.write_bytes({"empty": b"", "truncated": data[:-100], "text": b"best: 3\n"}[kind])
    return path


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "directory", "no weights"])
def test_a_damaged_auto_file_names_itself(tmp_path, kind):
    path = damaged(tmp_path, kind)
    match = rf"{path} (is damaged|is a directory)"
    with pytest.raises(CheckpointError, match=match):
        AutoTrainer.load(tmp_path / "run", device="cpu")
    with pytest.raises(CheckpointError, match=match):
        AutoTrainer(kiln.MLP, [3, [8], 2], device="cpu").load(tmp_path / "run")


def test_a_recipe_declaring_a_huge_network_is_refused_before_it_is_built(tmp_path, monkeypatch):
    """The issue's example: Linear(40000, 40000), 6.4 GB, in a file of a few kilobytes."""
    record = auto_record(kiln.MLP(3, [8], 2), None, epoch=1)
    record["recipe"]["kwargs"]["hidden"] = [40_000, 40_000]
    atomic_save(record, tmp_path / "run.pt")
    assert (tmp_path / "run.pt").stat().st_size < 20_000
    built: list[tuple[str, tuple[int, ...]]] = []

    def spy(layer: torch.nn.Linear) -> None:  # records, and never touches the memory
        built.append((layer.weight.device.type, tuple(layer.weight.shape)))

    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", spy)
    with pytest.raises(ValueError, match=r"do not fit MLP.*\(40000, 40000\) in the model"):
        AutoTrainer.load(tmp_path / "run", device="cpu")
    assert ("meta", (40_000, 40_000)) in built
    assert all(device == "meta" for device, _ in built)
