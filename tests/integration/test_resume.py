"""Resume equals an uninterrupted run: in process, and after real SIGKILLs (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import kiln
from kiln.checkpoint import CheckpointError

SCRIPT = Path(__file__).with_name("resume_script.py")


def make_run(directory: Path, callbacks: list | None = None) -> tuple[kiln.Trainer, kiln.Data]:
    """The same script, built anew: what a user's process does when it starts again."""
    kiln.seed_everything(0)
    X = torch.randn(96, 4)
    Y = (X.sum(1) > 0).long()
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    trainer = kiln.Trainer(
        net,
        loss="cross_entropy",
        metrics=["accuracy"],
        callbacks=callbacks or [kiln.callbacks.EarlyStopping(patience=20)],
        dir=directory,
        device="cpu",
        progress=False,
    )
    return trainer, kiln.Data((X, Y), batch_size=16, shuffle=True)


def without_time(history: kiln.History) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "time"} for row in history.epochs]


def test_resume_continues_to_the_same_result_bitwise(tmp_path):
    """3 epochs, a new process-like start, resume to 6 == 6 epochs straight (bitwise on CPU)."""
    straight, data = make_run(tmp_path / "straight")
    straight.fit(data, val=0.25, epochs=6)

    first, data = make_run(tmp_path / "resumed")
    first.fit(data, val=0.25, epochs=3, resume=True)
    second, data = make_run(tmp_path / "resumed")
    history = second.fit(data, val=0.25, epochs=6, resume=True)

    assert second.state.resumed
    assert second.state.epoch == 6
    assert without_time(history) == without_time(straight.history)
    assert history.batch_losses == straight.history.batch_losses
    for ours, theirs in zip(second.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    assert second.callbacks.callbacks[0].wait == straight.callbacks.callbacks[0].wait


def test_resume_with_nothing_saved_starts_from_scratch(tmp_path):
    """resume=True in an empty directory trains from the start and saves last.ckpt."""
    trainer, data = make_run(tmp_path / "run")
    trainer.fit(data, val=0.25, epochs=2, resume=True)
    assert not trainer.state.resumed
    assert (tmp_path / "run" / "last.ckpt").is_file()


def test_resume_of_an_ended_run_trains_no_further(tmp_path):
    """A run ended by early stopping stays ended when the script runs again."""

    class StopAtTwo(kiln.Callback):
        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            if trainer.state.epoch == 2:
                trainer.request_stop("enough")

    trainer, data = make_run(tmp_path / "run", callbacks=[StopAtTwo()])
    trainer.fit(data, epochs=5, resume=True)
    again, data = make_run(tmp_path / "run", callbacks=[StopAtTwo()])
    history = again.fit(data, epochs=5, resume=True)
    assert len(history) == 2
    assert again.state.stop_reason == "enough"


def test_resume_needs_a_directory():
    """resume=True without dir= says how to give one."""
    trainer = kiln.Trainer(nn.Linear(2, 2), loss="cross_entropy", device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"Trainer\(\.\.\., dir='runs/name'\)"):
        trainer.fit((torch.randn(4, 2), torch.zeros(4, dtype=torch.long)), resume=True)


def test_resume_of_tuples_in_a_process_seeded_otherwise_is_bitwise(tmp_path):
    """`fit((X, Y))` makes a `Data` with a seed drawn at random: the checkpoint keeps it."""

    def run(directory: Path, epochs: int, process_seed: int) -> kiln.Trainer:
        trainer, data = make_run(directory)
        torch.manual_seed(process_seed)  # what `fit` draws the shuffling seed from
        trainer.fit(tuple(data.tensors), val=0.25, epochs=epochs, resume=True, batch_size=16)
        return trainer

    straight = run(tmp_path / "straight", 4, process_seed=1)
    run(tmp_path / "resumed", 2, process_seed=1)
    resumed = run(tmp_path / "resumed", 4, process_seed=2)  # a new process, another seed
    assert resumed.history.batch_losses == straight.history.batch_losses
    for ours, theirs in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_resume_with_other_callbacks_is_refused(tmp_path):
    """A checkpoint saved with other callbacks cannot continue the same run."""
    trainer, data = make_run(tmp_path / "run")
    trainer.fit(data, val=0.25, epochs=1)
    other, data = make_run(tmp_path / "run", callbacks=[kiln.callbacks.ProgressBar(bar=False)])
    with pytest.raises(
        ValueError,
        match=r"callbacks \['EarlyStopping', 'BestWeights', .*this trainer has \['ProgressBar'",
    ):
        other.fit(data, epochs=2, resume=True)


def test_load_state_dict_from_another_architecture_names_the_mismatch(tmp_path):
    """Weights of another architecture give a ValueError naming keys and shapes."""
    trainer, data = make_run(tmp_path / "run")
    state = trainer.state_dict()
    wider = kiln.Trainer(
        nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2)),
        loss="cross_entropy",
        callbacks=[kiln.callbacks.EarlyStopping(patience=20)],
        device="cpu",
        progress=False,
    )
    with pytest.raises(ValueError, match=r"another architecture.*0.weight: \(16, 4\) in the file"):
        wider.load_state_dict(state)


def test_unwritable_directory_fails_before_training(tmp_path):
    """A directory that cannot be created is reported before the first step."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    trainer, data = make_run(blocker / "run")
    with pytest.raises(CheckpointError, match="is not writable"):
        trainer.fit(data, val=0.25, epochs=1)
    assert trainer.state.step == 0


def run_script(directory: Path, epochs: int, kill_at: str | None, **env: str) -> tuple[int, int]:
    """Run the script (with `env` added to the environment); return its exit code and the step
    it started at."""
    if kill_at:
        env["KILL_AT"] = kill_at
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(directory), str(epochs)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(result.stderr)
    started = int(result.stdout.split("starting at step ")[1].split()[0])
    return result.returncode, started


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_and_mid_write_is_bitwise_identical(tmp_path):
    """Killed mid-epoch and while writing checkpoints, rerun to the end: same weights, history.

    192 training samples in batches of 32 make 6 steps an epoch; the script saves after every
    epoch and, with `StepCheckpoint(every_n_steps=4)`, at steps 4, 8, 12, ... as well.
    """
    assert run_script(tmp_path / "straight", 6, None) == (0, 0)
    interrupted = tmp_path / "interrupted"
    # Dies at step 10: resumes from step 8, in the middle of epoch 2.
    assert run_script(interrupted, 6, "step:10") == (-signal.SIGKILL, 0)
    # Saves step 12 (the last batch of epoch 2), dies writing the end of epoch 2: resumes from
    # the mid-epoch save that has every batch of the epoch done and its validation not.
    assert run_script(interrupted, 6, "write:2") == (-signal.SIGKILL, 8)
    assert list(interrupted.glob(".*.tmp")), "the killed write leaves its temporary file"
    # Saves the end of epoch 2, dies writing step 16's mid-epoch save.
    assert run_script(interrupted, 6, "write:2") == (-signal.SIGKILL, 12)
    # Dies at step 30: resumes from step 28, in the middle of epoch 5.
    assert run_script(interrupted, 6, "step:30") == (-signal.SIGKILL, 12)
    assert not list(interrupted.glob(".*.tmp")), "a new run clears stale temporary files"
    assert run_script(interrupted, 6, None) == (0, 28)

    expected = torch.load(tmp_path / "straight" / "result.pt", weights_only=True)
    actual = torch.load(interrupted / "result.pt", weights_only=True)
    assert actual["history"] == expected["history"]
    assert actual["batch_losses"] == expected["batch_losses"]
    for key, value in expected["weights"].items():
        assert torch.equal(actual["weights"][key], value), key


@pytest.mark.slow
def test_a_sigkill_before_the_first_checkpoint_leaves_each_epoch_once(tmp_path, monkeypatch):
    """Killed while writing the first last.ckpt, after epoch 1's rows and its MLflow values:
    the rerun starts from scratch, the logs hold each epoch once, no temporary file is left,
    and the killed MLflow run is marked KILLED."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local store, read back here too
    store = (tmp_path / "mlruns").as_uri()
    run = tmp_path / "run"
    assert run_script(run, 3, "write:1", LOGGERS=store) == (-signal.SIGKILL, 0)
    assert not (run / "last.ckpt").exists()
    assert len((run / "log.txt").read_text().splitlines()) == 1
    assert list(run.glob(".*.tmp")), "the killed write leaves its temporary file"
    assert run_script(run, 3, None, LOGGERS=store) == (0, 0)

    assert [line[:9] for line in (run / "log.txt").read_text().splitlines()] == [
        f"Epoch {epoch}/3" for epoch in (1, 2, 3)
    ]
    for name, separator in (("log.csv", ","), ("log.tsv", "\t")):
        lines = (run / name).read_text().splitlines()
        assert [line.split(separator)[0] for line in lines] == ["epoch", "1", "2", "3"], name
    assert not list(run.glob(".*.tmp"))
    client = mlflow.tracking.MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]


def test_full_disk_during_a_run_is_reported_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch
):
    """ENOSPC on the second epoch's save: a clear error, and epoch 1's checkpoint still loads."""
    import errno

    import kiln.checkpoint.files as files

    real_save, calls = torch.save, []

    def filling_save(obj, file, *args, **kwargs):
        calls.append(file.name)
        if len([name for name in calls if "last.ckpt" in name]) == 2:
            file.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(files.torch, "save", filling_save)
    trainer, data = make_run(tmp_path / "run")
    with pytest.raises(CheckpointError, match="the disk is full.*previous file there"):
        trainer.fit(data, val=0.25, epochs=3)
    monkeypatch.setattr(files.torch, "save", real_save)
    assert trainer.state.epoch == 2
    assert not list((tmp_path / "run").glob(".*.tmp"))
    again, data = make_run(tmp_path / "run")
    again.fit(data, val=0.25, epochs=1, resume=True)  # already done: loads epoch 1 and stops
    assert again.state.epoch == 1
