"""The experiment directory (`Trainer(dir=...)`, `kiln.checkpoint.directory`) and `trainer.test`."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import kiln
from kiln.checkpoint.directory import find_checkpoint
from kiln.checkpoint.files import temporary_path


def classification_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 4, generator=generator)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def make_trainer(directory: Path | None, **options) -> kiln.Trainer:
    kiln.seed_everything(0)
    return kiln.Trainer(
        nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)),
        task="classification",
        optimizer="sgd",
        lr=0.1,
        device="cpu",
        progress=False,
        dir=directory,
        **options,
    )


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file, delimiter="\t"))


def test_directory_holds_the_log_best_weights_and_plots(tmp_path):
    """A run with `dir` writes log.tsv (one row per epoch), best/ files and plots/."""
    pytest.importorskip("matplotlib")
    trainer = make_trainer(tmp_path / "run")
    trainer.fit(classification_data(), val=0.25, epochs=3, batch_size=16)
    rows = read_tsv(tmp_path / "run" / "log.tsv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(trainer.history.val_accuracy[-1])
    best = sorted(path.name for path in (tmp_path / "run" / "best").iterdir())
    assert best
    assert all(name.startswith("epoch_") for name in best)
    plots = {path.name for path in (tmp_path / "run" / "plots").iterdir()}
    assert {"loss.png", "accuracy.png", "lr.png"} <= plots


def test_running_the_script_again_resumes_and_continues_the_log(tmp_path):
    """A resumed run appends to log.tsv without repeating an epoch."""
    data = classification_data()
    make_trainer(tmp_path / "run").fit(data, val=0.25, epochs=2, batch_size=16)
    again = make_trainer(tmp_path / "run")
    again.fit(data, val=0.25, epochs=4, batch_size=16, resume=True)
    rows = read_tsv(tmp_path / "run" / "log.tsv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4"]
    assert len(again.history) == 4


def test_a_new_run_over_a_saved_one_is_refused_and_changes_nothing(tmp_path):
    data = classification_data()
    make_trainer(tmp_path / "run").fit(data, val=0.25, epochs=3, batch_size=16)
    before = {path: path.read_bytes() for path in (tmp_path / "run").rglob("*") if path.is_file()}
    with pytest.raises(FileExistsError, match=r"holds a run \(last.ckpt, saved after epoch 3\)\. "
                       r"Continue it with `fit\(..., resume=True\)`; or start a new run in a new "
                       r"directory, or with `Trainer\(..., overwrite=True\)`"):  # fmt: skip
        make_trainer(tmp_path / "run").fit(data, val=0.25, epochs=1, batch_size=16)
    after = {path: path.read_bytes() for path in (tmp_path / "run").rglob("*") if path.is_file()}
    assert after == before


def test_an_overwriting_run_replaces_the_run_files_and_keeps_the_others(tmp_path):
    data = classification_data()
    make_trainer(tmp_path / "run").fit(data, val=0.25, epochs=3, batch_size=16)
    stale = tmp_path / "run" / "best" / "epoch_99.ckpt"
    stale.write_bytes(b"")
    mine = tmp_path / "run" / "notes.txt"
    mine.write_text("kept")
    trainer = make_trainer(tmp_path / "run", overwrite=True)
    trainer.fit(data, val=0.25, epochs=1, batch_size=16)
    assert [path.name for path in (tmp_path / "run" / "best").iterdir()] == ["epoch_1.ckpt"]
    assert mine.read_text() == "kept"
    rows = (tmp_path / "run" / "log.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in rows] == ["epoch", "1"]


def test_a_new_fit_removes_what_killed_writes_left_in_every_folder_it_writes(tmp_path):
    """Half-written files of a killed process go from the directory, best/, plots/ and a
    Checkpoint's folder when the run resumes; a user's files there stay."""
    pytest.importorskip("matplotlib")
    run, data = tmp_path / "run", classification_data()
    make_trainer(run, callbacks=[kiln.callbacks.Checkpoint("mine/model_{epoch}.pt")]).fit(
        data, val=0.25, epochs=1, batch_size=16
    )
    killed = subprocess.Popen([sys.executable, "-c", "pass"])  # a process that no longer runs
    killed.wait()
    written = ["last.ckpt", "best/epoch_2.ckpt", "plots/loss.png", "mine/model_2.pt"]
    leftovers = [
        path.with_name(path.name.replace(f"kiln-{os.getpid()}", f"kiln-{killed.pid}"))
        for path in (temporary_path(run / name) for name in written)
    ]
    users = [run / name for name in (".notes.tmp", "best/.draft.tmp", "plots/.my.1.tmp")]
    for path in [*leftovers, *users]:
        path.write_bytes(b"half a file")

    trainer = make_trainer(run, callbacks=[kiln.callbacks.Checkpoint("mine/model_{epoch}.pt")])
    trainer.fit(data, val=0.25, epochs=2, batch_size=16, resume=True)
    assert trainer.state.resumed
    assert [path.name for path in leftovers if path.exists()] == []
    assert all(path.read_bytes() == b"half a file" for path in users)


def test_without_validation_the_training_value_is_monitored(tmp_path):
    """No `val`: the best weights follow `accuracy` rather than never being written."""
    trainer = make_trainer(tmp_path / "run")
    trainer.fit(classification_data(), epochs=2, batch_size=16)
    assert list((tmp_path / "run" / "best").glob("epoch_*.ckpt"))


def test_user_log_at_the_same_path_replaces_the_directory_log(tmp_path):
    """Two callbacks never write the same file: the user's CSVLogger('log.tsv') wins."""
    mine = kiln.callbacks.CSVLogger("log.tsv", separator="\t")
    trainer = make_trainer(tmp_path / "run", callbacks=[mine])
    names = [type(callback).__name__ for callback in trainer.callbacks]
    assert names.count("CSVLogger") == 1


def test_trainer_test_evaluates_the_chosen_checkpoint_and_writes_test_log(tmp_path):
    data, test = classification_data(0), classification_data(1)
    trainer = make_trainer(tmp_path / "run")
    trainer.fit(data, val=0.25, epochs=4, batch_size=16)
    best_path, best_epoch = find_checkpoint(tmp_path / "run", "best")
    assert best_epoch == max(int(p.stem.split("_")[1]) for p in best_path.parent.iterdir())
    evaluation = trainer.test(test)
    # The model now holds the best weights: evaluating again gives the same values.
    assert trainer.evaluate(test).to_dict() == evaluation.to_dict()
    (row,) = read_tsv(tmp_path / "run" / "test_log.tsv")
    assert row["epoch"] == str(best_epoch)
    assert float(row["test_accuracy"]) == pytest.approx(evaluation.accuracy)
    assert "time" not in row

    last = trainer.test(test, "last", name="final")
    (row,) = read_tsv(tmp_path / "run" / "final_log.tsv")
    assert row["epoch"] == "4"
    assert float(row["final_loss"]) == pytest.approx(last.loss)

    by_epoch = trainer.test(test, best_epoch)
    by_path = trainer.test(test, best_path)
    assert by_epoch.to_dict() == by_path.to_dict() == evaluation.to_dict()


def test_trainer_test_names_what_is_missing(tmp_path):
    trainer = make_trainer(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="holds no best checkpoint"):
        trainer.test(classification_data())
    with pytest.raises(FileNotFoundError, match="nothing was trained"):
        trainer.test(classification_data(), "last")
    trainer.fit(classification_data(), val=0.25, epochs=1, batch_size=16)
    with pytest.raises(FileNotFoundError, match="no checkpoint of epoch 7.*after epochs \\[1\\]"):
        trainer.test(classification_data(), 7)
    with pytest.raises(FileNotFoundError, match="`checkpoint` must be 'best', 'last'"):
        trainer.test(classification_data(), tmp_path / "nowhere.ckpt")
    with pytest.raises(TypeError, match="received float"):
        trainer.test(classification_data(), 1.5)  # type: ignore[arg-type]
    without = make_trainer(None)
    with pytest.raises(ValueError, match="has none: create it with `Trainer"):
        without.test(classification_data())
