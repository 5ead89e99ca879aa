"""`MLflowLogger`: a run's parameters, per-epoch values and final model in an MLflow run.

It talks to MLflow through `MlflowClient` with an explicit run id, so it leaves MLflow's
"active run" (`mlflow.start_run`) alone and works next to other code that uses it. MLflow is an
optional dependency (`pip install 'kiln[mlflow]'`), imported when `fit` starts.

What lives here: the callback. What does not: the hyperparameters kiln knows of a run
(`run_hparams` in `tensorboard.py`, shared by both loggers) and the values themselves, which
the trainer puts in `trainer.state.logs`.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.callbacks.log_files import resolve_log_path
from kiln.callbacks.tensorboard import check_hparams, run_hparams
from kiln.options import check_flags

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from kiln.trainer import Trainer

#: MLflow accepts these characters in names; others become `_`.
_NOT_ALLOWED = re.compile(r"[^\w\-. /]")
#: MLflow's limit on the length of a parameter's value.
MAX_PARAM_LENGTH = 6000
#: The tag naming the experiment directory (`trainer.dir`) of the run that logs to an MLflow run.
DIRECTORY_TAG = "kiln.dir"


def _client(tracking_uri: str | None) -> MlflowClient:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise ImportError(
            f"MLflowLogger needs the mlflow package ({error}). Install it with "
            "`pip install 'kiln[mlflow]'` (or `pip install mlflow`)."
        ) from error
    return MlflowClient(tracking_uri=tracking_uri)


def _check_text(name: str, value: Any, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"MLflowLogger: `{name}` must be a string; received {value!r}.")
    if not value:
        raise ValueError(f"MLflowLogger: `{name}` is empty; give a name such as 'kiln'.")
    return value


class MLflowLogger(Callback):
    """Log the run to MLflow: parameters once, every epoch's values, and optionally the model.

    Parameters: the `params` given here and what kiln knows of the run (model, parameter
    count, loss, optimizer, lr, batch size, epochs; see `run_hparams`), logged when the first
    training pass starts. Metrics: every value of each epoch's logs (`loss`, `val_loss`,
    `accuracy`, `lr`, `time`, ...) at `step` = the epoch number, in one request per epoch; the
    values are numbers already, so no device synchronisation happens. The run ends `FINISHED`,
    `FAILED` after an exception, or `KILLED` after Ctrl-C.

    Resuming continues the same MLflow run: its id is saved in the checkpoint with this
    callback's state, and a later `fit` of the same trainer continues it too. MLflow cannot
    delete a value, so an epoch that the interrupted run logged after its checkpoint is not
    logged again (on the CPU the resumed run computes the same values).

    A killed process cannot end its MLflow run, so with `trainer.dir` each run gets the tag
    `kiln.dir` (the directory's absolute path), and every `fit` of that directory marks
    `KILLED` the runs of the experiment so tagged that are still `RUNNING` and that it does not
    continue: those whose process was killed, such as one killed in its first epoch, before a
    checkpoint named its run (the run then starts again from scratch, in a new MLflow run).

    Args:
        experiment: The experiment's name; created when missing.
        run_name: The run's name; `None`: MLflow makes one up.
        tracking_uri: Where MLflow keeps runs (`"sqlite:///mlflow.db"`, `"http://host:5000"`,
            a `file:` URI). A path, relative to `trainer.dir` when the trainer has one, is a
            SQLite database when it ends in `.db`, else a file store directory. `None`:
            MLflow's own setting (`MLFLOW_TRACKING_URI`, else its default).
        log_model: When `fit` ends without an error, save the trainer (`trainer.save`, which
            `kiln.load` reads back) as the artifact `model/model.kiln`.
        params: More parameters to log (names to bool, int, float or str).
        tags: Tags for the run (names to strings).
        run_id: Log into this existing run rather than a new one.

    Example:
        >>> from kiln.callbacks.mlflow_logger import MLflowLogger
        >>> MLflowLogger(experiment="digits", params={"dropout": 0.1}).experiment
        'digits'
    """

    #: Under torchrun, runs on rank 0 only: it only logs to MLflow.
    main_process_only = True

    def __init__(
        self,
        experiment: str = "kiln",
        run_name: str | None = None,
        tracking_uri: str | os.PathLike[str] | None = None,
        log_model: bool = False,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.experiment = str(_check_text("experiment", experiment, optional=False))
        self.run_name = _check_text("run_name", run_name)
        if tracking_uri is not None and not isinstance(tracking_uri, (str, os.PathLike)):
            raise TypeError(
                "MLflowLogger: `tracking_uri` must be a URI string, a path or None; received "
                f"{type(tracking_uri).__name__}."
            )
        check_flags("MLflowLogger", log_model=log_model)
        if tags is not None and not (
            isinstance(tags, Mapping) and all(isinstance(v, str) for v in tags.values())
        ):
            raise TypeError(f"MLflowLogger: `tags` must be a dict of strings; received {tags!r}.")
        self.tracking_uri = tracking_uri
        self.log_model = log_model
        self.params = check_hparams("MLflowLogger", params)
        self.tags = dict(tags or {})
        #: The MLflow run logged to, once `fit` has started (saved with the checkpoint).
        self.run_id = _check_text("run_id", run_id)
        self._client: MlflowClient | None = None
        self._params_logged = False
        self._logged_through = 0  # epochs of the run that MLflow already holds

    def on_fit_start(self, trainer: Trainer) -> None:
        """Connect, then continue the saved run or start a new one."""
        uri = self.tracking_uri
        if uri is not None and not isinstance(uri, str):
            path = resolve_log_path(Path(uri).expanduser(), trainer)
            uri = f"sqlite:///{path}" if path.suffix == ".db" else path.as_uri()
        client = self._client = _client(uri)
        self._logged_through = 0
        experiment_id = None if self.run_id is None else self._continue(client, trainer)
        if experiment_id is None:
            found = client.get_experiment_by_name(self.experiment)
            experiment_id = (
                client.create_experiment(self.experiment) if found is None else found.experiment_id
            )
            tags = dict(self.tags)
            if trainer.dir is not None:
                tags[DIRECTORY_TAG] = str(trainer.dir.resolve())
            run = client.create_run(experiment_id, tags=tags, run_name=self.run_name)
            self.run_id, self._params_logged = run.info.run_id, False
        if trainer.dir is not None:
            self._end_killed_runs(client, experiment_id, str(trainer.dir.resolve()))

    def _end_killed_runs(self, client: MlflowClient, experiment_id: str, directory: str) -> None:
        """Mark `KILLED` the runs of `directory` left `RUNNING` by a killed process.

        One directory trains one run at a time, so any such run other than the one continued
        now was left by a process that could not end it.
        """
        token = None
        while True:
            page = client.search_runs(
                [experiment_id], "attributes.status = 'RUNNING'", page_token=token
            )
            for run in page:
                left = run.info.run_id != self.run_id
                if left and run.data.tags.get(DIRECTORY_TAG) == directory:
                    client.set_terminated(run.info.run_id, status="KILLED")
            token = page.token
            if not token:
                return

    def _continue(self, client: MlflowClient, trainer: Trainer) -> str | None:
        """Reopen the run `run_id`; return its experiment, or `None` (warned) if it is gone."""
        from mlflow.exceptions import MlflowException

        run_id = str(self.run_id)
        try:
            run = client.get_run(run_id)
        except MlflowException:
            run = None
        if run is None or run.info.lifecycle_stage == "deleted":
            warnings.warn(
                f"MLflowLogger: the MLflow run {run_id} that this trainer logged to cannot be "
                f"found at {client.tracking_uri}; logging to a new run instead.",
                RuntimeWarning,
                stacklevel=2,
            )
            self.run_id = None
            return None
        client.update_run(run_id, status="RUNNING")
        if trainer.state.resumed:  # what the interrupted run logged after its checkpoint
            epochs = [  # MLflow's `step` of each value: its epoch number
                m.step for key in run.data.metrics for m in client.get_metric_history(run_id, key)
            ]
            self._logged_through = max(epochs, default=0)
        return str(run.info.experiment_id)

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Log the parameters, once the training data is known."""
        if self._params_logged or self._client is None or self.run_id is None:
            return
        from mlflow.entities import Param

        values = {**run_hparams(trainer), **self.params}
        params = [Param(_name(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in values.items()]
        self._client.log_batch(self.run_id, params=params)
        self._params_logged = True

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Log the epoch's values at `step` = the epoch number."""
        if self._client is None or self.run_id is None:
            return
        from mlflow.entities import Metric

        logs = trainer.state.logs
        epoch = int(logs.get("epoch", trainer.state.epoch))
        if epoch <= self._logged_through:
            return
        now = int(time.time() * 1000)
        metrics = [
            Metric(_name(name), float(value), now, epoch)
            for name, value in logs.items()
            if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        self._client.log_batch(self.run_id, metrics=metrics)

    def on_fit_end(self, trainer: Trainer) -> None:
        """Log the model if asked, and mark the run finished, failed or killed."""
        client, run_id, error = self._client, self.run_id, trainer.state.error
        if client is None or run_id is None:
            return
        if self.log_model and error is None and trainer.history.epochs:
            with tempfile.TemporaryDirectory() as folder:
                path = trainer.save(Path(folder) / "model.kiln")
                client.log_artifact(run_id, str(path), artifact_path="model")
        status = "FINISHED" if error is None else "FAILED"
        if isinstance(error, KeyboardInterrupt):
            status = "KILLED"
        client.set_terminated(run_id, status=status)
        self._client = None

    def state_dict(self) -> dict[str, Any]:
        """Return the run's id and whether its parameters are logged."""
        return {"run_id": self.run_id, "params_logged": self._params_logged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned: the resumed `fit` continues that run."""
        run_id = state.get("run_id")
        self.run_id = None if run_id is None else str(run_id)
        self._params_logged = bool(state.get("params_logged", False))


def _name(name: str) -> str:
    """Return `name` with the characters MLflow rejects replaced by `_`."""
    return _NOT_ALLOWED.sub("_", name)
