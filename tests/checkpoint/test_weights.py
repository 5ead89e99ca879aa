"""Tests of `kiln.checkpoint.weights`: the weights record and reading weights from any file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import kiln
from kiln.checkpoint import CheckpointError, atomic_save
from kiln.checkpoint.weights import load_weights, save_weights


def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_weights_records_the_epoch_and_logs(tmp_path: Path):
    net = nn.Linear(3, 2)
    path = save_weights(net, tmp_path / "deep" / "net.pt", epoch=4, logs={"val_loss": 0.25})
    assert path == tmp_path / "deep" / "net.pt"
    record = torch.load(path, weights_only=True)
    assert (record["format"], record["epoch"], record["logs"]) == (
        "kiln-weights",
        4,
        {"val_loss": 0.25},
    )
    assert equal(load_weights(path), net.state_dict())


def test_load_weights_reads_a_bare_state_dict(tmp_path: Path):
    net = nn.Linear(3, 2)
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    assert equal(load_weights(tmp_path / "bare.pt"), net.state_dict())


def test_load_weights_reads_a_trainer_checkpoint(tmp_path: Path):
    trainer = kiln.Trainer(nn.Linear(3, 1), loss="mse", dir=tmp_path, device="cpu", progress=False)
    trainer.fit((torch.randn(16, 3), torch.randn(16, 1)), epochs=1)
    assert equal(load_weights(tmp_path / "last.ckpt"), trainer.model.state_dict())


def test_load_weights_reads_a_state_dict_entry(tmp_path: Path):
    net = nn.Linear(3, 2)
    atomic_save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "other.ckpt")
    assert equal(load_weights(tmp_path / "other.ckpt"), net.state_dict())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"epoch": 3, "lr": 0.1},
            r"holds a dict with the keys 'epoch', 'lr', but no model weights",
        ),
        ({}, r"holds a dict with the keys none, but no model weights"),
        ([torch.ones(2)], r"holds a list, but model weights are a dict of tensors"),
    ],
)
def test_load_weights_refuses_files_without_weights(tmp_path: Path, content, message: str):
    path = atomic_save(content, tmp_path / "not_weights.pt")
    with pytest.raises(ValueError, match=message):
        load_weights(path)


def test_load_weights_of_a_missing_file_is_a_checkpoint_error(tmp_path: Path):
    with pytest.raises(CheckpointError, match="No checkpoint at"):
        load_weights(tmp_path / "missing.pt")
