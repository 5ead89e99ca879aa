"""`Checkpoint`: write the model, or the whole trainer, to files named from an epoch's values.

What lives here: when to write (every `period` epochs, or on each strict improvement of a
monitored value), the file names (templates filled from the epoch's logs), keeping only the last
best file, and loading the best weights back at the end of `fit`. What does not: how files are
written and read safely (`kiln.checkpoint.files`), what a weights file holds
(`kiln.checkpoint.weights`), and the trainer's own `dir/last.ckpt`, which the loop writes after
every epoch for resuming.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.callbacks.monitor import improved, initial_best, resolve_mode
from kiln.checkpoint.files import atomic_save, remove_leftover_temporaries
from kiln.checkpoint.run import load_model_state
from kiln.checkpoint.weights import load_weights, weights_record
from kiln.distributed.context import is_main_process

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: What a file may hold: the model's weights, or the trainer's whole state.
_WHAT = ("model", "trainer")


class Checkpoint(Callback):
    """Save the model after epochs: every `period` epochs, or each time `monitor` improves.

    The file name is a template filled, after each epoch, with `{epoch}` (1-based: the epoch
    just finished), `{epoch0}` (the same, 0-based) and every logged value, format specs included:
    `"best_epoch_{epoch}.ckpt"`, `"w.{epoch:02d}-{val_loss:.2f}.pt"`. Relative names are placed
    in the trainer's `dir` when it has one, else in the current directory; missing directories
    are created. Every file is written atomically.

    With `what="model"`, a file holds `{"format": "kiln-weights", "epoch": e, "logs": {...},
    "model": state_dict}`; with `what="trainer"`, the trainer's whole state (as `last.ckpt`).
    `kiln.checkpoint.load_weights(path)` returns the weights from either.

    Common layouts are configurations of this class::

        # every epoch, and the best ones on each improvement, numbered from 0
        Checkpoint("all_models/model_{epoch0}.pth")
        Checkpoint("best_models/model_{epoch0}.pth", monitor="val_accuracy", save_best_only=True)
        # one file, overwritten on each improvement of val_loss
        Checkpoint("digits.pt", monitor="val_loss", save_best_only=True)
        # a file per improvement, only the last one kept, reloaded at the end
        Checkpoint("best_epoch_{epoch}.ckpt", save_best_only=True, keep_only_last_best=True,
                   restore_best=True, verbose=True)
        # a folder each for the best loss, the best score and the trainer's state, with a
        # prefix ("01") glued to the names
        Checkpoint("log/loss/01epoch_{epoch:04d}_loss_{val_loss:.4f}.pt",
                   monitor="val_loss", save_best_only=True)
        Checkpoint("log/score/01epoch_{epoch:04d}_score_{val_score:.4f}.pt",
                   monitor="val_score", save_best_only=True)
        Checkpoint("log/checkpoints/01epoch_{epoch:04d}.pt", period=2, what="trainer")

    Compatibility: Poutyne's `ModelCheckpoint` arguments and file-name templates.

    Args:
        filename: The path template of the files.
        monitor: The logged value that decides what is best, such as `"val_loss"`. Read only
            with `save_best_only` (else the attribute `monitor` is None). In an epoch without
            validation, a `val_` value is skipped.
        mode: `"min"`, `"max"`, or `"auto"` to read it from the name (as `EarlyStopping`).
        save_best_only: Write only when `monitor` is strictly better than every earlier epoch
            (the first value always is).
        keep_only_last_best: With `save_best_only`, delete the previous best file when a new
            one is written.
        period: Without `save_best_only`, write after every `period`-th epoch.
        restore_best: With `save_best_only`, load the best file's weights into the model when
            `fit` ends (not after an exception, which would hide it).
        verbose: Print a line for each file written and for the restore.
        what: `"model"` for the model's weights, `"trainer"` for the whole training state.

    With `save_best_only`, the best value, its epoch and file are in `best`, `best_epoch` and
    `best_path` (else they keep their initial `inf`, 0 and None); `saved` lists the files
    written that are still on disk, oldest first. They carry on across `fit`
    calls of the same trainer and over a resume. The saved state names the files inside the
    trainer's `dir` relative to it, so a copy of a run directory, resumed, manages the files of
    the copy and never those of the original.

    Raises:
        ValueError: For inconsistent arguments (see the messages).

    Example:
        >>> import tempfile, torch, kiln
        >>> X, Y = torch.randn(64, 3), torch.randn(64, 1)
        >>> folder = tempfile.mkdtemp()
        >>> best = Checkpoint(folder + "/best_{epoch}_{val_loss:.2f}.pt", save_best_only=True,
        ...                   keep_only_last_best=True, restore_best=True)
        >>> trainer = kiln.Trainer(torch.nn.Linear(3, 1), loss="mse", callbacks=[best],
        ...                        device="cpu", progress=False)
        >>> history = trainer.fit((X, Y), val=(X, Y), epochs=3)
        >>> best.best == min(history.val_loss)
        True
        >>> best.best_path.name == f"best_{best.best_epoch}_{best.best:.2f}.pt"
        True
        >>> best.saved == [best.best_path]  # keep_only_last_best deleted the earlier ones
        True
    """

    def __init__(
        self,
        filename: str | os.PathLike[str] = "checkpoint_epoch_{epoch}.ckpt",
        monitor: str = "val_loss",
        mode: str = "auto",
        save_best_only: bool = False,
        keep_only_last_best: bool = False,
        period: int = 1,
        restore_best: bool = False,
        verbose: bool = False,
        what: str = "model",
    ) -> None:
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(
                f"Checkpoint: `filename` must be a path template such as "
                f"'checkpoint_epoch_{{epoch}}.ckpt'; received {type(filename).__name__}."
            )
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(
                f"Checkpoint: `period` must be a positive integer (write every `period` "
                f"epochs); received {period!r}."
            )
        for flag, value in (
            ("restore_best", restore_best),
            ("keep_only_last_best", keep_only_last_best),
        ):
            if value and not save_best_only:
                raise ValueError(
                    f"Checkpoint: `{flag}=True` needs `save_best_only=True` (only then is there "
                    f"a best file); received save_best_only={save_best_only!r}. Pass "
                    "save_best_only=True as well."
                )
        if what not in _WHAT:
            raise ValueError(
                f"Checkpoint: `what` must be 'model' (the weights) or 'trainer' (the whole "
                f"training state); received {what!r}."
            )
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                f"Checkpoint: `mode` must be 'auto', 'min' or 'max'; received {mode!r}."
            )
        self.filename = os.fspath(filename)
        # A periodic checkpoint reads no value, so it names none: the trainer checks a callback's
        # `monitor` before the first step, and must not refuse one that trains without validation.
        self.monitor: str | None = monitor if save_best_only else None
        self.mode = resolve_mode("Checkpoint", monitor, mode) if save_best_only else "min"
        self.save_best_only = save_best_only
        self.keep_only_last_best = keep_only_last_best
        self.period = period
        self.restore_best = restore_best
        self.verbose = verbose
        self.what = what
        self._dir: Path | None = None  # the trainer's: relative paths in the state are in it
        self._restored = False  # a state was loaded whose relative paths are still to place
        self._reset()

    def _reset(self) -> None:
        self.best = initial_best(self.mode)
        self.best_epoch = 0
        self.best_path: Path | None = None
        self.saved: list[Path] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        """Start afresh on a new run; a resumed run or a further `fit` carries on.

        The files a resumed run saved are found in this trainer's `dir`, and the temporary
        files that a write killed halfway left in the folders written to are removed.
        """
        if trainer.state.epoch == 0 and not trainer.state.resumed:
            self._reset()
        self._dir = trainer.dir
        if self._restored:
            self.best_path = None if self.best_path is None else self._placed(self.best_path)
            self.saved = [self._placed(path) for path in self.saved]
            self._restored = False
        if is_main_process():  # under torchrun rank 0 writes the files
            for folder in self._folders():
                remove_leftover_temporaries(folder)

    def _placed(self, path: Path) -> Path:
        """Place a path relative to the run directory (as saved in the state) in `dir`."""
        return path if path.is_absolute() or self._dir is None else self._dir / path

    def _recorded(self, path: Path) -> str:
        """How the state names `path`: relative to the run directory when inside it."""
        if self._dir is None or (self._restored and not path.is_absolute()):
            return str(path)  # no run directory, or restored and not yet placed by a `fit`
        absolute, directory = Path(os.path.abspath(path)), os.path.abspath(self._dir)
        if absolute.is_relative_to(directory):
            return absolute.relative_to(directory).as_posix()
        return str(absolute)

    def _folders(self) -> set[Path]:
        """The folders this callback writes to: the template's, when fixed, and the files'."""
        folder = Path(self.filename).expanduser().parent
        fixed = [] if "{" in str(folder) else [self._placed(folder)]
        return {*fixed, *(path.parent for path in self.saved)}

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Write the file when this epoch is due: periodic, or a new best."""
        epoch, logs = trainer.state.epoch, trainer.state.logs
        if not self.save_best_only:
            if epoch % self.period == 0:
                path = self._write(trainer)
                self._say(f"Epoch {epoch}: saving file to {path}")
            return
        value = self._monitored(logs)
        if value is None or not improved(value, self.best, self.mode):
            return
        path = self._path(trainer)
        previous_best, previous_path = self.best, self.best_path
        # Set before writing, so that a file of the whole trainer records this new best.
        self.best, self.best_epoch, self.best_path = value, epoch, path
        self._write(trainer, path)
        self._say(
            f"Epoch {epoch}: {self.monitor} improved from {previous_best:.5f} to {value:.5f}, "
            f"saving file to {path}"
        )
        if self.keep_only_last_best and previous_path is not None and previous_path != path:
            if is_main_process():  # under torchrun rank 0 writes the files
                previous_path.unlink(missing_ok=True)
            self.saved = [saved for saved in self.saved if saved != previous_path]

    def on_fit_end(self, trainer: Trainer) -> None:
        """With `restore_best`, load the best file's weights into the model."""
        if not self.restore_best or self.best_path is None or trainer.state.error is not None:
            return
        self._say(f"Restoring data from {self.best_path}")
        load_model_state(trainer.model, load_weights(self.best_path), str(self.best_path))

    def _monitored(self, logs: dict[str, float]) -> float | None:
        """Return the monitored value, or None in an epoch without validation."""
        if self.monitor is None:  # set with save_best_only, the only caller; tells mypy
            return None
        if self.monitor in logs:
            return float(logs[self.monitor])
        if self.monitor.startswith("val_") and not any(key.startswith("val_") for key in logs):
            return None
        raise ValueError(
            f"Checkpoint(monitor={self.monitor!r}) names a value that is not logged. Logged "
            f"values: {', '.join(sorted(logs))}. Pass one of them as `monitor`."
        )

    def _path(self, trainer: Trainer) -> Path:
        """Fill the template with this epoch's values and place it in the trainer's dir."""
        epoch = trainer.state.epoch
        values = {**trainer.state.logs, "epoch": epoch, "epoch0": epoch - 1}
        try:
            name = self.filename.format_map(values)
        except KeyError as error:
            raise ValueError(
                f"Checkpoint(filename={self.filename!r}) names {{{error.args[0]}}}, which is not "
                f"logged at epoch {trainer.state.epoch}. Available: "
                f"{', '.join('{' + key + '}' for key in sorted(values))}."
            ) from None
        except (ValueError, IndexError) as error:
            raise ValueError(
                f"Checkpoint(filename={self.filename!r}) cannot be filled with this epoch's "
                f"values ({error}). Use names of logged values in braces with format specs that "
                "suit numbers, such as '{epoch:03d}' or '{val_loss:.4f}'."
            ) from None
        path = Path(name).expanduser()
        if not path.is_absolute() and trainer.dir is not None:
            path = trainer.dir / path
        return path

    def _write(self, trainer: Trainer, path: Path | None = None) -> Path:
        path = self._path(trainer) if path is None else path
        # Recorded before writing, so that a trainer file holds this callback's final state.
        self.saved = [*(saved for saved in self.saved if saved != path), path]
        if not is_main_process():
            return path  # under torchrun rank 0 writes the file; the trainer waits for it
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.what == "trainer":
            content = trainer.state_dict()
        else:
            content = weights_record(trainer.model, trainer.state.epoch, trainer.state.logs)
        atomic_save(content, path)
        return path

    def _say(self, line: str) -> None:
        if self.verbose and is_main_process():
            print(line)

    def state_dict(self) -> dict[str, Any]:
        """Return the best value, its epoch and file, and the files written.

        With a trainer `dir`, files inside it are named relative to it, others absolutely.
        """
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_path": None if self.best_path is None else self._recorded(self.best_path),
            "saved": [self._recorded(path) for path in self.saved],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; relative paths are placed in `dir` at `fit`."""
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.best_path = None if state["best_path"] is None else Path(state["best_path"])
        self.saved = [Path(path) for path in state["saved"]]
        self._restored = True
