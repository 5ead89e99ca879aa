"""Tests of `kiln.callbacks.Checkpoint`: every seed's layout, the files' content, and errors."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks import Checkpoint
from kiln.checkpoint import atomic_save, safe_load
from kiln.checkpoint.weights import load_weights
from tests.callbacks.runs import QuNetStyle, Snapshots


class ScriptedValues(kiln.Callback):
    """Writes a scripted value into each epoch's logs, as a validation metric would."""

    def __init__(self, name: str, values: list[float]) -> None:
        self.name, self.values = name, values

    def on_validation_end(self, trainer: kiln.Trainer) -> None:
        trainer.state.logs[self.name] = self.values[trainer.state.epoch - 1]


X, Y = torch.randn(64, 3), torch.randn(64, 1)
LABELS = torch.randint(0, 2, (64,))


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative names land in tmp_path when the trainer has no dir (most tests: a dir adds its
    own callbacks, which these tests do not need)."""
    monkeypatch.chdir(tmp_path)


def fit(callbacks: list[Any], epochs: int, dir: Path | None = None, val: bool = True, **kw: Any):
    """Train a tiny regression (or, with classify=True, a classifier logging accuracy)."""
    classify = kw.pop("classify", False)
    model = kw.pop("model", None) or nn.Linear(3, 2 if classify else 1)
    trainer = kiln.Trainer(
        model,
        loss=kw.pop("loss", "cross_entropy" if classify else "mse"),
        lr=0.05,
        metrics=["accuracy"] if classify else None,
        callbacks=callbacks,
        dir=dir,
        device="cpu",
        progress=False,
    )
    data = (X, LABELS if classify else Y)
    trainer.fit(data, val=data if val else None, epochs=epochs, **kw)
    return trainer


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_epoch_torchfusion_all_models(tmp_path: Path):
    """Without save_best_only a file per epoch, numbered from 1, in the trainer's dir."""
    snapshots, checkpoint = Snapshots(), Checkpoint("all_models/model_{epoch}.pth")
    trainer = fit([snapshots, checkpoint], 3, tmp_path / "model_dir")
    paths = [tmp_path / "model_dir" / "all_models" / f"model_{e}.pth" for e in (1, 2, 3)]
    assert checkpoint.saved == paths
    assert sorted((tmp_path / "model_dir" / "all_models").iterdir()) == paths
    for epoch, path in enumerate(paths, start=1):
        record = safe_load(path)
        assert record["format"] == "kiln-weights"
        assert record["epoch"] == epoch
        assert record["logs"]["val_loss"] == trainer.history.val_loss[epoch - 1]
        assert same_weights(record["model"], snapshots.weights[epoch - 1])
        assert same_weights(load_weights(path), snapshots.weights[epoch - 1])
    assert not same_weights(snapshots.weights[0], snapshots.weights[2])


def test_best_only_torchfusion_best_models_with_verbose_lines(tmp_path: Path, capsys):
    """save_best_only writes on strict improvements only; verbose prints Poutyne's line."""
    checkpoint = Checkpoint(
        "best_models/model_{epoch}.pth", "val_accuracy", save_best_only=True, verbose=True
    )
    values = [0.2, 0.5, 0.5, 0.4, 0.7]
    fit([ScriptedValues("val_accuracy", values), checkpoint], 5, classify=True)
    folder = Path("best_models")
    assert sorted(p.name for p in folder.iterdir()) == ["model_1.pth", "model_2.pth", "model_5.pth"]
    assert (checkpoint.best, checkpoint.best_epoch) == (0.7, 5)
    assert checkpoint.best_path == folder / "model_5.pth"
    assert capsys.readouterr().out.splitlines() == [
        "Epoch 1: val_accuracy improved from -inf to 0.20000, saving file to "
        "best_models/model_1.pth",
        "Epoch 2: val_accuracy improved from 0.20000 to 0.50000, saving file to "
        "best_models/model_2.pth",
        "Epoch 5: val_accuracy improved from 0.50000 to 0.70000, saving file to "
        "best_models/model_5.pth",
    ]


@pytest.mark.parametrize("keep_only_last_best", [False, True])
def test_pytorch_trainer_one_file_overwritten(tmp_path: Path, capsys, keep_only_last_best: bool):
    """A constant name is overwritten on each improvement and never deleted."""
    snapshots = Snapshots()
    checkpoint = Checkpoint(
        "digits.pt", "val_loss", save_best_only=True, keep_only_last_best=keep_only_last_best
    )
    fit([ScriptedValues("val_loss", [1.0, 0.5, 0.8, 0.3, 0.9]), snapshots, checkpoint], 5)
    assert checkpoint.saved == [Path("digits.pt")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.pt"]
    assert safe_load(tmp_path / "digits.pt")["epoch"] == 4
    assert same_weights(load_weights(tmp_path / "digits.pt"), snapshots.weights[3])
    assert capsys.readouterr().out == ""  # not verbose


def test_poutyne_keep_only_last_best_and_restore_best(tmp_path: Path, capsys):
    """Older best files are deleted; at the end the best epoch's weights are loaded back."""
    snapshots = Snapshots()
    checkpoint = Checkpoint(
        "saves/fc/best_epoch_{epoch}.ckpt",
        save_best_only=True,
        keep_only_last_best=True,
        restore_best=True,
        verbose=True,
    )
    values = [1.0, 0.5, 0.7, 0.8]
    trainer = fit([ScriptedValues("val_loss", values), snapshots, checkpoint], 4)
    best = Path("saves/fc/best_epoch_2.ckpt")
    assert list((tmp_path / "saves" / "fc").iterdir()) == [tmp_path / best]
    assert checkpoint.saved == [best]
    assert same_weights(trainer.model.state_dict(), snapshots.weights[1])
    assert not same_weights(trainer.model.state_dict(), snapshots.weights[3])
    assert capsys.readouterr().out.splitlines() == [
        "Epoch 1: val_loss improved from inf to 1.00000, saving file to saves/fc/best_epoch_1.ckpt",
        "Epoch 2: val_loss improved from 1.00000 to 0.50000, saving file to "
        "saves/fc/best_epoch_2.ckpt",
        "Restoring data from saves/fc/best_epoch_2.ckpt",
    ]


def test_qunet_three_folders_with_a_prefix(tmp_path: Path):
    """Best-loss and best-score folders, and a periodic folder of full trainer checkpoints."""
    by_loss = Checkpoint(
        "log/loss/01epoch_{epoch:04d}_loss_{val_loss:.4f}.pt", "val_loss", save_best_only=True
    )
    by_score = Checkpoint(
        "log/score/01epoch_{epoch:04d}_score_{val_score:.4f}.pt", "val_score", save_best_only=True
    )
    points = Checkpoint("log/checkpoints/01epoch_{epoch:04d}.pt", period=2, what="trainer")
    trainer = fit([by_loss, by_score, points], 4, model=QuNetStyle(), loss=None)
    history = trainer.history

    def improvements(values: list[float], better: Any) -> list[int]:
        best, epochs = None, []
        for epoch, value in enumerate(values, start=1):
            if best is None or better(value, best):
                best, epochs = value, [*epochs, epoch]
        return epochs

    loss_epochs = improvements(history.val_loss, float.__lt__)
    score_epochs = improvements(history.val_score, float.__gt__)
    assert loss_epochs
    assert score_epochs
    assert [str(p) for p in by_loss.saved] == [
        f"log/loss/01epoch_{e:04d}_loss_{history.val_loss[e - 1]:.4f}.pt" for e in loss_epochs
    ]
    assert [str(p) for p in by_score.saved] == [
        f"log/score/01epoch_{e:04d}_score_{history.val_score[e - 1]:.4f}.pt" for e in score_epochs
    ]
    assert all((tmp_path / p).is_file() for p in by_loss.saved + by_score.saved)
    assert [p.name for p in sorted((tmp_path / "log" / "checkpoints").iterdir())] == [
        "01epoch_0002.pt",
        "01epoch_0004.pt",
    ]
    point = safe_load(tmp_path / "log" / "checkpoints" / "01epoch_0002.pt")
    assert point["state"]["epoch"] == 2
    assert point["optimizer"] is not None


def test_period_with_values_in_the_name(tmp_path: Path, capsys):
    """period=2 writes after epochs 2 and 4; format specs apply to the logged values."""
    checkpoint = Checkpoint("w.{epoch:02d}-{val_loss:.2f}.pt", period=2, verbose=True)
    trainer = fit([checkpoint], 5)
    names = [f"w.{e:02d}-{trainer.history.val_loss[e - 1]:.2f}.pt" for e in (2, 4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert checkpoint.saved == [Path(name) for name in names]
    assert capsys.readouterr().out.splitlines() == [
        f"Epoch 2: saving file to {names[0]}",
        f"Epoch 4: saving file to {names[1]}",
    ]


def test_absolute_names_ignore_the_trainer_dir(tmp_path: Path):
    checkpoint = Checkpoint(str(tmp_path / "elsewhere" / "model_{epoch}.pt"))
    fit([checkpoint], 1, tmp_path / "run")
    assert (tmp_path / "elsewhere" / "model_1.pt").is_file()
    assert not list((tmp_path / "run").glob("model_*"))


def test_what_trainer_holds_the_whole_state_and_restores_its_weights(tmp_path: Path):
    snapshots = Snapshots()
    checkpoint = Checkpoint("best.ckpt", save_best_only=True, restore_best=True, what="trainer")
    trainer = fit([ScriptedValues("val_loss", [0.5, 1.0, 2.0]), snapshots, checkpoint], 3)
    content = safe_load(tmp_path / "best.ckpt")
    assert content["state"]["epoch"] == 1
    [own] = [entry for entry in content["callbacks"] if entry["name"] == "Checkpoint"]
    assert own["state"]["best_path"] == "best.ckpt"  # the new best is recorded in its file
    assert same_weights(content["model"], snapshots.weights[0])
    assert same_weights(trainer.model.state_dict(), snapshots.weights[0])


def test_a_periodic_checkpoint_monitors_nothing_and_needs_no_validation():
    checkpoint = Checkpoint("m_{epoch}.pt")
    assert checkpoint.monitor is None
    fit([checkpoint], 2, val=False)
    assert checkpoint.saved == [Path("m_1.pt"), Path("m_2.pt")]
    assert (checkpoint.best, checkpoint.best_epoch, checkpoint.best_path) == (math.inf, 0, None)


def epoch_end(checkpoint: Checkpoint, logs: dict[str, float]) -> None:
    """Call on_epoch_end with the given logs, as the trainer does after epoch 1."""
    state = SimpleNamespace(epoch=1, logs=logs)
    checkpoint.on_epoch_end(SimpleNamespace(state=state, dir=None, model=nn.Linear(1, 1)))


def test_an_epoch_without_validation_is_skipped_for_a_val_monitor():
    checkpoint = Checkpoint("m.pt", save_best_only=True)
    epoch_end(checkpoint, {"epoch": 1, "loss": 0.5})
    assert checkpoint.saved == []
    assert checkpoint.best_path is None
    epoch_end(checkpoint, {"epoch": 1, "loss": 0.5, "val_loss": 0.7})
    assert checkpoint.saved == [Path("m.pt")]
    assert checkpoint.best == 0.7


def test_a_monitor_that_is_not_logged_is_an_error():
    checkpoint = Checkpoint("m.pt", monitor="val_accuracy", save_best_only=True)
    with pytest.raises(
        ValueError,
        match=r"Checkpoint\(monitor='val_accuracy'\) names a value that is not logged\. "
        r"Logged values: epoch, loss, val_loss\. Pass one of them as `monitor`\.",
    ):
        epoch_end(checkpoint, {"epoch": 1, "loss": 0.5, "val_loss": 0.7})
    # In a real run the trainer refuses it before the first optimizer step.
    with pytest.raises(ValueError, match=r"Checkpoint\(monitor='val_accuracy'\) names a value"):
        fit([checkpoint], 1)


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        (
            "m_{val_los}.pt",
            r"names \{val_los\}, which is not logged at epoch 1\. Available: \{epoch\}, "
            r"\{epoch0\}, \{loss\}, \{lr\}, \{time\}, \{val_loss\}",
        ),
        ("m_{loss:d}.pt", r"cannot be filled with this epoch's values \(Unknown format code"),
        ("m_{}.pt", "cannot be filled with this epoch's values"),
    ],
)
def test_a_template_that_cannot_be_filled_is_an_error(filename: str, message: str):
    with pytest.raises(ValueError, match=message):
        fit([Checkpoint(filename)], 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"period": 0}, ValueError, r"`period` must be a positive integer .*received 0\."),
        ({"period": 1.5}, ValueError, r"`period` must be a positive integer .*received 1\.5\."),
        ({"period": True}, ValueError, r"`period` must be a positive integer .*received True\."),
        (
            {"restore_best": True},
            ValueError,
            r"`restore_best=True` needs `save_best_only=True` .*received save_best_only=False",
        ),
        (
            {"keep_only_last_best": True},
            ValueError,
            r"`keep_only_last_best=True` needs `save_best_only=True`",
        ),
        ({"what": "optimizer"}, ValueError, r"`what` must be 'model' .*received 'optimizer'\."),
        ({"mode": "bigger"}, ValueError, r"`mode` must be 'auto', 'min' or 'max'; received"),
        (
            {"monitor": "val_f", "save_best_only": True},
            ValueError,
            r"received monitor='val_f', but cannot tell",
        ),
        ({"filename": 3}, TypeError, r"`filename` must be a path template .*received int\."),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs: dict[str, Any], error, message):
    with pytest.raises(error, match=message):
        Checkpoint(**kwargs)


def test_state_dict_round_trips_through_a_file(tmp_path: Path):
    checkpoint = Checkpoint("b_{epoch}.pt", save_best_only=True)
    fit([ScriptedValues("val_loss", [2.0, 1.0, 3.0]), checkpoint], 3)
    state = safe_load(atomic_save(checkpoint.state_dict(), tmp_path / "state.pt"))
    assert state == {
        "best": 1.0,
        "best_epoch": 2,
        "best_path": "b_2.pt",
        "saved": ["b_1.pt", "b_2.pt"],
    }
    restored = Checkpoint(save_best_only=True)
    restored.load_state_dict(state)
    assert (restored.best, restored.best_epoch) == (1.0, 2)
    assert restored.best_path == Path("b_2.pt")
    assert restored.saved == checkpoint.saved


def test_a_resumed_run_and_a_further_fit_carry_the_best_on(tmp_path: Path, capsys):
    """After a resume the old best still counts, and keep_only_last_best deletes its file."""
    values = [1.0, 0.5, 0.7, 0.4, 0.6, 0.45]

    def callbacks() -> list[Any]:
        checkpoint = Checkpoint(
            "mine_{epoch}.pt", save_best_only=True, keep_only_last_best=True, verbose=True
        )
        return [ScriptedValues("val_loss", values), checkpoint]

    fit(callbacks(), 2, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("mine_*")) == ["mine_2.pt"]
    capsys.readouterr()
    resumed = callbacks()
    trainer = fit(resumed, 4, tmp_path, resume=True)
    assert trainer.state.resumed
    assert trainer.state.epoch == 4
    assert capsys.readouterr().out.splitlines() == [
        f"Epoch 4: val_loss improved from 0.50000 to 0.40000, saving file to {tmp_path}/mine_4.pt"
    ]
    assert sorted(p.name for p in tmp_path.glob("mine_*")) == ["mine_4.pt"]
    assert resumed[1].saved == [tmp_path / "mine_4.pt"]
    trainer.fit((X, Y), val=(X, Y), epochs=2)  # a further fit: 0.6 and 0.45 are no better
    assert (resumed[1].best, resumed[1].best_epoch) == (0.4, 4)
    assert capsys.readouterr().out == ""


def test_epoch0_numbers_files_from_zero_as_torchfusion(tmp_path):
    """`{epoch0}` is the 0-based epoch: TorchFusion's model_0.pth after the first epoch."""
    from kiln.checkpoint import load_weights, safe_load
    from tests.callbacks.runs import fit, make_trainer

    trainer = make_trainer([Checkpoint("all_models/model_{epoch0}.pth")], tmp_path)
    fit(trainer, epochs=2)
    names = sorted(path.name for path in (tmp_path / "all_models").iterdir())
    assert names == ["model_0.pth", "model_1.pth"]
    assert safe_load(tmp_path / "all_models" / "model_1.pth")["epoch"] == 2
    weights = load_weights(tmp_path / "all_models" / "model_1.pth")
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())


def test_a_copied_run_directory_resumed_touches_only_its_own_files(tmp_path: Path):
    """Run in A, copy A to B, resume B: A stays byte for byte; B deletes and keeps B's files."""
    values = [1.0, 0.5, 0.4, 0.3]

    def callbacks() -> list[Any]:
        checkpoint = Checkpoint(
            "mine/b_{epoch}.pt", save_best_only=True, keep_only_last_best=True, restore_best=True
        )
        return [ScriptedValues("val_loss", values), checkpoint]

    first, second = tmp_path / "A", tmp_path / "B"
    fit(callbacks(), 2, first)
    shutil.copytree(first, second)
    original = {path: path.read_bytes() for path in first.rglob("*") if path.is_file()}

    resumed = callbacks()
    fit(resumed, 4, second, resume=True)
    assert {path: path.read_bytes() for path in first.rglob("*") if path.is_file()} == original
    assert sorted(p.name for p in (second / "mine").iterdir()) == ["b_4.pt"]
    assert resumed[1].best_path == second / "mine" / "b_4.pt"
    assert resumed[1].saved == [second / "mine" / "b_4.pt"]
    assert sorted(p.name for p in (second / "best").iterdir()) == [
        f"epoch_{epoch}.ckpt" for epoch in (1, 2, 3, 4)
    ]
    # The state names the files relative to the directory it is in.
    state = safe_load(second / "last.ckpt")["callbacks"][1]["state"]
    assert (state["best_path"], state["saved"]) == ("mine/b_4.pt", ["mine/b_4.pt"])
