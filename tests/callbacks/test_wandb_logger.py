"""Tests of `kiln.callbacks.WandbLogger` in W&B's offline mode, by reading back what it wrote.

Offline, W&B writes each run to `$WANDB_DIR/wandb/offline-run-{time}-{id}/run-{id}.wandb`: the
records that `wandb sync` uploads later, one protocol buffer (`wandb.proto.wandb_internal_pb2.
Record`) each, framed as a LevelDB log (a 7-byte file header, then 32 KiB blocks of chunks with
a 7-byte header: CRC, length, type). `read_run` reads those records back: the run (its id,
project, name and config), the `history` rows (the logged values with their `_step`), the
`config` updates and the artifacts. No network is used (`mode="offline"`).
"""

from __future__ import annotations

import json
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import kiln
from kiln.callbacks.wandb_logger import WandbLogger
from tests.callbacks.runs import Interrupt, fit, make_trainer

pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class KillAtEpochEnd(kiln.Callback):
    """Raise at the end of `epoch`, after the loggers before it wrote, before the checkpoint."""

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.epoch == self.epoch:
            raise RuntimeError("killed")


def records(path: Path) -> list[bytes]:
    """The records of a `.wandb` file, reassembled from their chunks."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    found, pending, position = [], b"", 7
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:  # zeros to the end of the block
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == FULL:
            found.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            found.append(pending + chunk)
    return found


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """What one offline run directory holds."""

    run_id: str
    project: str
    name: str
    started: int  # the start time, in nanoseconds
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[Any] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def steps(self) -> list[int]:
        return [row["_step"] for row in self.history]

    def values(self, key: str) -> list[tuple[int, float]]:
        return [(row["_step"], row[key]) for row in self.history if key in row]


def read_run(path: Path, timeout: float = 30.0) -> OfflineRun:
    """Read a run's file, once W&B's writer (another process) has written its `exit` record.

    `run.finish()` returns once the writer has the records, not once they are on the disk.
    """
    deadline = time.monotonic() + timeout
    while True:
        run = _parse(path)
        if run is not None and run.exit_code is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert run is not None, f"{path} holds no run record"
    return run


def _parse(path: Path) -> OfflineRun | None:
    run = None
    for raw in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            started = record.run.start_time.ToNanoseconds()
            run = OfflineRun(
                record.run.run_id, record.run.project, record.run.display_name, started
            )
            updates = record.run.config.update
        elif kind == "config":
            updates = record.config.update
        elif kind == "history":
            row = {_key(item): json.loads(item.value_json) for item in record.history.item}
            run.history.append(row)  # type: ignore[union-attr]
            continue
        elif kind == "artifact":
            run.artifacts.append(record.artifact)  # type: ignore[union-attr]
            continue
        elif kind == "exit":
            run.exit_code = record.exit.exit_code  # type: ignore[union-attr]
            continue
        else:
            continue
        for item in updates:  # W&B's own entries start with `_`
            if not _key(item).startswith("_"):
                run.config[_key(item)] = json.loads(item.value_json)  # type: ignore[union-attr]
    return run


def offline_runs(folder: Path) -> list[OfflineRun]:
    """The offline runs under `folder/wandb`, oldest first."""
    runs = [read_run(path) for path in folder.glob("wandb/offline-run-*/run-*.wandb")]
    return sorted(runs, key=lambda run: run.started)


@pytest.fixture
def wandb_dir(tmp_path):
    """The folder that W&B writes under in these tests."""
    folder = tmp_path / "wandb_files"
    folder.mkdir()
    return folder


@pytest.fixture
def offline(wandb_dir):
    """Make `WandbLogger`s that write offline and silently to `wandb_dir`.

    Given as arguments rather than `WANDB_MODE`/`WANDB_DIR`: W&B reads the environment once
    per process, and these tests share their process.
    """

    def make(**kwargs: Any) -> WandbLogger:
        settings = {"silent": True, "console": "off"}
        return WandbLogger(mode="offline", dir=wandb_dir, settings=settings, **kwargs)

    return make


def test_config_and_epoch_values_read_back(tmp_path, wandb_dir, offline):
    logger = offline(project="tests", name="linear", config={"dropout": 0.1, "lr": 0.5})
    history = fit(make_trainer([logger], tmp_path / "run"))
    (run,) = offline_runs(wandb_dir)
    assert (run.run_id, run.project, run.name) == (logger.run_id, "tests", "linear")
    assert run.exit_code == 0
    assert run.config == {
        "dropout": 0.1,
        "lr": 0.5,  # the user's value wins over the optimizer's 0.001
        "model": "Linear",
        "parameters": 8,
        "loss": "cross_entropy",
        "optimizer": "Adam",
        "batch_size": 8,
        "epochs": 3,
        "precision": "32",
        "accumulate": 1,
        "nonfinite": "raise",
        "compile": False,
    }
    assert run.steps == [1, 2, 3]
    for key in ("loss", "accuracy", "lr", "time", "val_loss", "val_accuracy"):
        assert run.values(key) == list(zip([1, 2, 3], history[key], strict=True)), key
    assert run.values("epoch") == [(1, 1), (2, 2), (3, 3)]


@pytest.mark.parametrize("kill", ["before_epoch_3", "after_epoch_3_was_logged"])
def test_resume_continues_the_same_run_with_steps_going_forward(tmp_path, wandb_dir, offline, kill):
    """Each process writes its own offline directory, all for one W&B run id.

    The resumed run logs from the epoch after its checkpoint. Killed after epoch 3 was logged
    but not saved, both directories hold step 3 with the same value (on the CPU): `wandb
    sync` of the second, after the first, drops it, since W&B keeps a run's steps increasing.
    """
    interruption = Interrupt(2) if kill == "before_epoch_3" else KillAtEpochEnd(3)
    first = offline()
    with pytest.raises(RuntimeError, match="interrupted|killed"):
        fit(make_trainer([first, interruption], tmp_path / "run"), epochs=4)
    again = offline()
    resumed = make_trainer([again, type(interruption)(None)], tmp_path / "run")
    history = fit(resumed, epochs=4, resume=True)
    assert again.run_id == first.run_id
    interrupted, continued = offline_runs(wandb_dir)
    assert interrupted.run_id == continued.run_id == first.run_id
    assert interrupted.exit_code == 1
    assert continued.exit_code == 0
    assert interrupted.steps == ([1, 2] if kill == "before_epoch_3" else [1, 2, 3])
    assert continued.steps == [3, 4]
    assert interrupted.values("loss")[:2] == list(zip([1, 2], history.loss[:2], strict=True))
    assert continued.values("loss") == list(zip([3, 4], history.loss[2:], strict=True))
    if kill != "before_epoch_3":
        assert interrupted.values("loss")[2] == continued.values("loss")[0]


def test_a_run_already_holding_an_epoch_skips_it(wandb_dir, offline):
    """Online, W&B reports where a resumed run stands: epochs up to it are not logged again."""
    logger = offline()
    trainer = make_trainer([logger], None)
    fit(trainer, epochs=2)
    logger.logged_through = 3  # as after `starting_step` = 4 from the W&B server
    fit(trainer, epochs=2)
    first, later = offline_runs(wandb_dir)
    assert first.steps == [1, 2]
    assert later.steps == [4]
    assert later.run_id == first.run_id  # a later fit continues the same run


def test_a_new_run_in_the_same_logger_starts_a_new_wandb_run(wandb_dir, offline):
    logger = offline()
    fit(make_trainer([logger], None), epochs=1)
    first = logger.run_id
    fit(make_trainer([logger], None), epochs=1)
    assert logger.run_id != first
    assert [run.steps for run in offline_runs(wandb_dir)] == [[1], [1]]


def test_log_model_logs_the_best_checkpoint_as_an_artifact(tmp_path, wandb_dir, offline):
    logger = offline(log_model=True)
    trainer = make_trainer([logger], tmp_path / "run")
    history = fit(trainer, epochs=3)
    best = min(range(3), key=lambda index: history.val_loss[index]) + 1
    (run,) = offline_runs(wandb_dir)
    (artifact,) = run.artifacts
    assert (artifact.name, artifact.type) == (f"model-{logger.run_id}", "model")
    assert sorted(artifact.aliases) == ["best", f"epoch_{best}", "latest"]  # W&B adds latest
    assert json.loads(artifact.metadata) == {"epoch": best}
    assert [entry.path for entry in artifact.manifest.contents] == [f"epoch_{best}.ckpt"]


def test_log_model_needs_a_run_directory(wandb_dir, offline):
    with pytest.raises(ValueError, match=r"log_model=True\) logs the best checkpoint"):
        fit(make_trainer([offline(log_model=True)], None), epochs=1)
    assert offline_runs(wandb_dir) == []


def test_state_holds_the_run_id_as_plain_data():
    logger = WandbLogger()
    logger.load_state_dict({"run_id": "abc", "logged_through": 4})
    assert logger.state_dict() == {"run_id": "abc", "logged_through": 4}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"project": 3}, TypeError, r"`project` must be a non-empty string; received 3"),
        ({"name": ""}, TypeError, r"`name` must be a non-empty string; received ''"),
        ({"mode": "cloud"}, ValueError, r"`mode` must be one of 'online', .* received 'cloud'"),
        ({"dir": 5}, TypeError, r"`dir` must be a directory path or None; received 5"),
        ({"log_model": "yes"}, TypeError, r"`log_model` must be True or False; received 'yes'"),
        ({"tags": "a"}, TypeError, r"`tags` must be a list of strings; received 'a'"),
        ({"config": {"a": None}}, TypeError, r"received 'a': None \(NoneType\)"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        WandbLogger(**kwargs)


def test_missing_wandb_names_the_extra(tmp_path, monkeypatch, offline):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"pip install 'kiln\[wandb\]'"):
        fit(make_trainer([offline()], tmp_path), epochs=1)
