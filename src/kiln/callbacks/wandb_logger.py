"""`WandbLogger`: a run's hyperparameters, per-epoch values and best checkpoint in Weights & Biases.

W&B is an optional dependency (`pip install 'kiln[wandb]'`), imported when `fit` starts. What
lives here: the callback. What does not: the hyperparameters kiln knows of a run (`run_hparams`
in `tensorboard.py`, shared by the loggers) and the values themselves, which the trainer puts
in `trainer.state.logs`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.callbacks.log_files import resolve_log_path
from kiln.callbacks.tensorboard import HPARAM_TYPES, check_hparams, run_hparams
from kiln.options import check_flags

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: W&B's modes: `None` is W&B's own setting (`WANDB_MODE`, else online).
MODES = ("online", "offline", "disabled")
_BEST_FILE = re.compile(r"epoch_(\d+)\.ckpt")


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as error:
        raise ImportError(
            f"WandbLogger needs the wandb package ({error}). Install it with "
            "`pip install 'kiln[wandb]'` (or `pip install wandb`)."
        ) from error
    return wandb


def _check_text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"WandbLogger: `{name}` must be a non-empty string; received {value!r}.")
    return value


def best_checkpoint(directory: Path) -> tuple[Path, int] | None:
    """Return the newest `best/epoch_{n}.ckpt` of an experiment directory and its epoch.

    Each improvement of the monitored value writes such a file, so the newest is the best.
    """
    found = [
        (int(match.group(1)), path)
        for path in (directory / "best").glob("epoch_*.ckpt")
        if (match := _BEST_FILE.fullmatch(path.name))
    ]
    if not found:
        return None
    epoch, path = max(found)
    return path, epoch


def loop_hparams(trainer: Trainer) -> dict[str, Any]:
    """Return the trainer's loop options (precision, accumulate, clipping, ...) that are set.

    Example:
        >>> import torch, kiln
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu")
        >>> loop_hparams(trainer)["precision"]
        '32'
    """
    options = trainer.options
    values = {field.name: getattr(options, field.name) for field in dataclasses.fields(options)}
    return {name: value for name, value in values.items() if isinstance(value, HPARAM_TYPES)}


class WandbLogger(Callback):
    """Log the run to Weights & Biases: hyperparameters, every epoch's values, the best model.

    Hyperparameters (the run's `config`): the `config` given here, plus what kiln knows of the
    run (model, parameter count, loss, optimizer, lr, batch size, epochs; see `run_hparams`)
    and the trainer's loop options (precision, accumulate, clipping, ...), set when the first
    training pass starts; a name in `config` wins. Values: every number of each epoch's logs
    (`loss`, `val_loss`, `accuracy`, `lr`, `time`, ...) under its logged name, at W&B `step` =
    the epoch number, in one `log` call per epoch. The values are numbers already (the trainer
    read them from the device once per epoch), so the logger adds no device synchronisation.

    With `log_model=True`, when `fit` ends without an error, the run directory's best checkpoint
    (`best/epoch_{n}.ckpt`, the weights of the best epoch by the trainer's `monitor`) becomes the
    model artifact `model-{run id}`, with the aliases `best` and `epoch_{n}`; the trainer needs
    a `dir`. The run ends with exit code 0, or 1 after an exception.

    Resuming continues the same W&B run: its id is saved in the checkpoint with this callback's
    state, and `fit(..., resume=True)` reopens it (`wandb.init(id=..., resume="allow")`); a
    later `fit` of the same trainer continues it too. Steps only go forward: an epoch that the
    run already holds is not logged again. Online, W&B says where the run stands
    (`run.starting_step`), which covers an epoch logged after the last checkpoint; offline,
    each process writes its own directory (`wandb sync` uploads them in turn), and the resumed
    run logs from the epoch after the checkpoint.

    Args:
        project: The W&B project; `None`: W&B's own setting (`WANDB_PROJECT`, ...).
        name: The run's display name; `None`: W&B makes one up.
        config: Hyperparameters to record (names to bool, int, float or str).
        log_model: Log the run directory's best checkpoint as an artifact (above).
        dir: Where W&B writes its files (a `wandb/` folder inside it); a relative path is
            relative to `trainer.dir` when the trainer has one. `None`: W&B's own setting
            (`WANDB_DIR`, else the current directory).
        mode: `"online"`, `"offline"` (no network; `wandb sync` uploads later) or
            `"disabled"`; `None`: W&B's own setting (`WANDB_MODE`, else online).
        entity: The W&B team or user; `None`: W&B's default.
        tags: Tags for the run.
        run_id: Log into this run (an id) rather than a new one.
        **init: More arguments for `wandb.init` (`group`, `notes`, `job_type`, `settings`, ...).

    Raises:
        TypeError: For arguments of the wrong type; ValueError for an unknown `mode`.

    Example:
        >>> import tempfile, torch, kiln
        >>> folder = tempfile.TemporaryDirectory()
        >>> logger = WandbLogger(project="demo", mode="offline", dir=folder.name,
        ...                      config={"dropout": 0.1}, settings={"silent": True})
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
        ...                        callbacks=[logger], progress=False)
        >>> _ = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), val=0.25, epochs=2)
        >>> logger.logged_through, len(logger.run_id) > 0
        (2, True)
        >>> folder.cleanup()
    """

    #: Under torchrun, runs on rank 0 only: it only logs to W&B.
    main_process_only = True

    def __init__(
        self,
        project: str | None = "kiln",
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        log_model: bool = False,
        dir: str | os.PathLike[str] | None = None,
        mode: str | None = None,
        *,
        entity: str | None = None,
        tags: Sequence[str] | None = None,
        run_id: str | None = None,
        **init: Any,
    ) -> None:
        self.project = _check_text("project", project)
        self.name = _check_text("name", name)
        self.entity = _check_text("entity", entity)
        check_flags("WandbLogger", log_model=log_model)
        if dir is not None and not isinstance(dir, (str, os.PathLike)):
            raise TypeError(
                f"WandbLogger: `dir` must be a directory path or None; received {dir!r}."
            )
        if mode is not None and mode not in MODES:
            raise ValueError(
                f"WandbLogger: `mode` must be one of {', '.join(map(repr, MODES))} or None; "
                f"received {mode!r}."
            )
        if tags is not None and (
            isinstance(tags, str) or not all(isinstance(tag, str) for tag in tags)
        ):
            raise TypeError(f"WandbLogger: `tags` must be a list of strings; received {tags!r}.")
        self.config = check_hparams("WandbLogger", config)
        self.log_model = log_model
        self.dir = None if dir is None else Path(dir).expanduser()
        self.mode = mode
        self.tags = None if tags is None else list(tags)
        self.init = dict(init)
        #: The W&B run's id, once `fit` has started (saved with the checkpoint).
        self.run_id = _check_text("run_id", run_id)
        self._given_id = self.run_id
        #: The last epoch the W&B run holds.
        self.logged_through = 0
        self.run: Any = None
        self._config_logged = False

    def on_fit_start(self, trainer: Trainer) -> None:
        """Open the W&B run: a new one, or the saved one when the run continues."""
        if self.log_model and trainer.dir is None:
            raise ValueError(
                "WandbLogger(log_model=True) logs the best checkpoint of the run directory, but "
                "this trainer has none: build it with Trainer(..., dir='runs/name'), or pass "
                "log_model=False."
            )
        wandb = _import_wandb()
        state = trainer.state
        if not (state.resumed or state.epoch > 0):  # a new run
            self.run_id, self.logged_through = self._given_id, 0
        self._config_logged = False
        directory = None if self.dir is None else resolve_log_path(self.dir, trainer)
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        continues = self.run_id is not None
        self.run = wandb.init(
            **{
                "project": self.project,
                "entity": self.entity,
                "name": self.name,
                "tags": self.tags,
                "config": dict(self.config),
                "dir": None if directory is None else str(directory),
                "mode": self.mode,
                "id": self.run_id,
                "resume": "allow" if continues else None,
                "reinit": "create_new",  # beside any run the user has open (W&B >= 0.19.10)
                **self.init,
            }
        )
        self.run_id = str(self.run.id)
        # Online, a resumed W&B run knows its last step: epochs up to it are not logged again.
        self.logged_through = max(self.logged_through, int(self.run.starting_step or 1) - 1)

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Record the hyperparameters, once the training data is known."""
        if self._config_logged or self.run is None:
            return
        known = {**run_hparams(trainer), **loop_hparams(trainer)}
        values = {name: value for name, value in known.items() if name not in self.config}
        self.run.config.update(values, allow_val_change=True)
        self._config_logged = True

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Log the epoch's values at `step` = the epoch number."""
        if self.run is None:
            return
        logs = trainer.state.logs
        epoch = int(logs.get("epoch", trainer.state.epoch))
        if epoch <= self.logged_through:
            return
        values = {
            name: value
            for name, value in logs.items()
            if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        self.run.log({**values, "epoch": epoch}, step=epoch)
        self.logged_through = epoch

    def on_fit_end(self, trainer: Trainer) -> None:
        """Log the best checkpoint if asked, and finish the run."""
        run, error = self.run, trainer.state.error
        if run is None:
            return
        self.run = None
        try:
            if self.log_model and error is None and trainer.dir is not None:
                self._log_best(run, trainer.dir)
        finally:
            run.finish(exit_code=0 if error is None else 1)

    def _log_best(self, run: Any, directory: Path) -> None:
        found = best_checkpoint(directory)
        if found is None:
            return
        path, epoch = found
        wandb = _import_wandb()
        artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata={"epoch": epoch})
        artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact, aliases=["best", f"epoch_{epoch}"])

    def state_dict(self) -> dict[str, Any]:
        """Return the run's id and the last epoch it holds."""
        return {"run_id": self.run_id, "logged_through": self.logged_through}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned: the resumed `fit` continues that run."""
        run_id = state.get("run_id")
        self.run_id = None if run_id is None else str(run_id)
        self.logged_through = int(state.get("logged_through", 0))
