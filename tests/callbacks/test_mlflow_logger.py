"""Tests of `kiln.callbacks.MLflowLogger` against a real local MLflow store, read back."""

from __future__ import annotations

import sys

import pytest
import torch

import kiln
from kiln.callbacks.mlflow_logger import MLflowLogger
from tests.callbacks.runs import fit, make_trainer

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient


class SimulatedKillError(Exception):
    """Stands for the process being killed."""


class KillAtEpochEnd(kiln.Callback):
    """Raise at the end of `epoch`, after the loggers before it wrote, before the checkpoint."""

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.epoch == self.epoch:
            raise SimulatedKillError


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local file store: MLflow 3 keeps it behind a switch, and it starts in milliseconds."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def history_of(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_params_and_metrics_read_back(tmp_path, store):
    logger = MLflowLogger(experiment="tests", run_name="linear", tracking_uri=store,
                          params={"dropout": 0.1}, tags={"team": "kiln"})  # fmt: skip
    history = fit(make_trainer([logger], tmp_path / "run"))
    client = MlflowClient(store)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "linear"
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    assert run.data.tags["team"] == "kiln"
    assert run.data.params == {
        "dropout": "0.1",
        "model": "Linear",
        "parameters": "8",
        "loss": "cross_entropy",
        "optimizer": "Adam",
        "lr": "0.001",
        "batch_size": "8",
        "epochs": "3",
    }
    assert set(run.data.metrics) == {"loss", "accuracy", "lr", "time", "val_loss", "val_accuracy"}
    for key in run.data.metrics:
        assert history_of(client, logger.run_id, key) == list(
            zip([1, 2, 3], history[key], strict=True)
        )


def test_log_model_stores_a_trainer_that_loads_back(tmp_path, store):
    logger = MLflowLogger(tracking_uri=store, log_model=True)
    trainer = make_trainer([logger], None)
    fit(trainer, epochs=1)
    client = MlflowClient(store)
    assert [f.path for f in client.list_artifacts(logger.run_id, "model")] == ["model/model.kiln"]
    folder = client.download_artifacts(logger.run_id, "model", str(tmp_path))
    loaded = kiln.load(f"{folder}/model.kiln", model=torch.nn.Linear(3, 2), device="cpu")
    for ours, theirs in zip(loaded.model.parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_resume_continues_the_same_run_without_repeating_an_epoch(tmp_path, store):
    """Killed after epoch 3 was logged but not saved: the resumed run logs 3 once, then 4."""
    first = MLflowLogger(tracking_uri=store)
    with pytest.raises(SimulatedKillError):
        fit(make_trainer([first, KillAtEpochEnd(3)], tmp_path), epochs=4)
    client = MlflowClient(store)
    assert client.get_run(first.run_id).info.status == "FAILED"
    assert [step for step, _ in history_of(client, first.run_id, "loss")] == [1, 2, 3]

    again = MLflowLogger(tracking_uri=store)
    history = fit(make_trainer([again, KillAtEpochEnd()], tmp_path), epochs=4, resume=True)
    assert again.run_id == first.run_id
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert history_of(client, first.run_id, "loss")[:2] == list(
        zip([1, 2], history.loss[:2], strict=True)
    )
    assert [step for step, _ in history_of(client, first.run_id, "loss")] == [1, 2, 3, 4]
    assert history_of(client, first.run_id, "loss")[3] == (4, history.loss[3])
    assert len(client.search_runs([client.get_run(first.run_id).info.experiment_id])) == 1


def test_a_run_killed_before_its_first_checkpoint_is_marked_killed(tmp_path, store, monkeypatch):
    """A kill in epoch 1 leaves its MLflow run RUNNING and no checkpoint names it: the next fit
    of the directory marks it KILLED, and its own run ends FINISHED; other runs stay as they are.
    """
    client = MlflowClient(store)
    experiment_id = client.create_experiment("kiln")
    elsewhere = client.create_run(
        experiment_id, tags={"kiln.dir": str((tmp_path / "other").resolve())}
    )
    first = MLflowLogger(tracking_uri=store)
    with monkeypatch.context() as patch:
        # A killed process never ends its run: nothing after the kill runs.
        patch.setattr(MlflowClient, "set_terminated", lambda *args, **kwargs: None)
        with pytest.raises(SimulatedKillError):
            fit(make_trainer([first, KillAtEpochEnd(1)], tmp_path / "run"), epochs=3)
    assert not (tmp_path / "run" / "last.ckpt").exists()
    assert client.get_run(first.run_id).info.status == "RUNNING"
    assert client.get_run(first.run_id).data.tags["kiln.dir"] == str((tmp_path / "run").resolve())

    again = MLflowLogger(tracking_uri=store)
    history = fit(make_trainer([again, KillAtEpochEnd()], tmp_path / "run"), epochs=3, resume=True)
    assert again.run_id != first.run_id  # the run started again from scratch
    assert client.get_run(first.run_id).info.status == "KILLED"
    assert client.get_run(again.run_id).info.status == "FINISHED"
    assert history_of(client, again.run_id, "loss") == list(
        zip([1, 2, 3], history.loss, strict=True)
    )
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"


def test_a_later_fit_continues_the_run_and_a_lost_run_warns(tmp_path, store):
    logger = MLflowLogger(tracking_uri=store)
    trainer = make_trainer([logger], None)
    fit(trainer, epochs=1)
    run_id = logger.run_id
    fit(trainer, epochs=1)
    client = MlflowClient(store)
    assert logger.run_id == run_id
    assert [step for step, _ in history_of(client, run_id, "loss")] == [1, 2]
    client.delete_run(run_id)
    with pytest.warns(RuntimeWarning, match=r"the MLflow run \w+ that this trainer logged to"):
        fit(trainer, epochs=1)
    assert logger.run_id != run_id
    assert [step for step, _ in history_of(client, logger.run_id, "loss")] == [3]


def test_a_path_names_a_store_in_the_trainer_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = MLflowLogger(tracking_uri=tmp_path.joinpath("mlruns").relative_to(tmp_path))
    fit(make_trainer([logger], tmp_path / "run"), epochs=1)
    client = MlflowClient((tmp_path / "run" / "mlruns").as_uri())
    assert client.get_run(logger.run_id).info.status == "FINISHED"


def test_state_holds_the_run_id_as_plain_data(store):
    logger = MLflowLogger(tracking_uri=store)
    logger.load_state_dict({"run_id": "abc", "params_logged": True})
    assert logger.state_dict() == {"run_id": "abc", "params_logged": True}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"experiment": 3}, TypeError, r"`experiment` must be a string; received 3"),
        ({"experiment": ""}, ValueError, r"`experiment` is empty"),
        ({"run_name": ["a"]}, TypeError, r"`run_name` must be a string; received \['a'\]"),
        ({"tracking_uri": 5}, TypeError, r"`tracking_uri` must be a URI string.* received int"),
        ({"log_model": "yes"}, TypeError, r"`log_model` must be True or False; received 'yes'"),
        ({"tags": {"a": 1}}, TypeError, r"`tags` must be a dict of strings; received \{'a': 1\}"),
        ({"params": {"a": None}}, TypeError, r"received 'a': None \(NoneType\)"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        MLflowLogger(**kwargs)


def test_missing_mlflow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ImportError, match=r"pip install 'kiln\[mlflow\]'"):
        fit(make_trainer([MLflowLogger()], tmp_path), epochs=1)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy 2.1 warns about MLflow
def test_a_sqlite_store_mlflows_default(tmp_path):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    logger = MLflowLogger(tracking_uri=tmp_path.joinpath("mlflow.db").relative_to(tmp_path))
    history = fit(make_trainer([logger], tmp_path), epochs=2)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert history_of(client, logger.run_id, "val_loss") == list(
        zip([1, 2], history.val_loss, strict=True)
    )
