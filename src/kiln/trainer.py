"""The `Trainer`: `fit`, `evaluate` and `predict`, with the training loop read top to bottom.

Glossary, used the same way everywhere in kiln:

- **batch**: one item from the data (a slice of `Data`, one `DataLoader` item);
- **step**: one optimizer update (one batch here; several with gradient accumulation);
- **epoch**: one pass over the training data, followed by validation when there is any;
- **pass**: one iteration over some data (training, validation, evaluation or prediction).

What lives here: the loop and the three step methods a subclass may override. What does not:
what a batch means (`batch.py`), what a step returns (`step.py`), accumulating values over a
pass (`tracking.py`), first-batch diagnostics (`diagnostics.py`), callbacks (`callbacks/`) and
files: state, saving, testing checkpoints (`trainer_files.py`, `experiment.py`).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kiln import experiment
from kiln.batch import concat_outputs, on_device, to_device
from kiln.callbacks.dispatch import CallbackList
from kiln.callbacks.progress import ProgressBar
from kiln.checkpoint import run as checkpoints
from kiln.checkpoint.position import PassPosition
from kiln.devices import resolve_device
from kiln.diagnostics import check_can_train, run_first_step
from kiln.events import Event
from kiln.history import Evaluation, History
from kiln.losses import LossFunction, resolve_loss
from kiln.metrics import resolve_metrics
from kiln.optim import resolve_optimizer
from kiln.optim.names import OptimizerSpec
from kiln.sources import as_batches, hold_out, iterate_inputs, num_batches, set_epoch
from kiln.state import TrainState
from kiln.step import (
    StepOutput,
    StepResult,
    find_model_steps,
    prediction_step,
    supervised_step,
    to_step_output,
)
from kiln.tracking import PassTracker
from kiln.trainer_files import TrainerFiles

TRAIN, VALIDATION = "train", "validation"


class Trainer(TrainerFiles):
    """Train, evaluate and run a PyTorch model.

    Three ways in, one loop: wrap a plain network with a loss and metrics (Keras, Poutyne);
    let the model define `training_step(batch, batch_idx)` returning a loss or a dict with
    `"loss"` and other values to log (QuNet, Lightning); or subclass `Trainer` and override
    `training_step`, `validation_step` and `predict_step` to change what happens to a batch
    (TorchFusion's custom trainer) while the trainer keeps backward, the optimizer and callbacks.

    Args:
        model: The network. If it defines `training_step` (and optionally `validation_step`
            and `predict_step`), those compute the loss and the values to log.
        loss: A loss name (`"cross_entropy"`, `"mse"`, ...), a torch loss module, a callable
            `fn(output, target)`, or `None` when the model computes its own loss.
        optimizer: A name (`"adam"`, `"sgd"`, ...), an optimizer instance, a callable
            `fn(params) -> Optimizer`, or `None` for a trainer that only evaluates and predicts.
        lr: The learning rate for an optimizer given by name (default 1e-3, 1e-2 for SGD).
        metrics: Names (`"accuracy"`, `"top3"`, `"mse"`, `"mae"`), metric objects, functions
            `fn(output, target)`, or a dict `{name: metric}`.
        callbacks: `kiln.Callback` objects, called in list order.
        device: `"auto"` (the GPU with the most free memory, then MPS, then the CPU), `"cpu"`,
            `"cuda:1"`, a CUDA index, or `False` for the CPU.
        dir: The experiment directory. With it, the whole training state is saved atomically
            to `dir/last.ckpt` after every epoch, so that `fit(..., resume=True)` continues the
            run exactly where it stopped; the best weights by `monitor`, a `log.tsv` and plots
            are kept there too (`kiln.experiment` has the layout). `None`: nothing on disk.
        progress: Add a `ProgressBar` (unless `callbacks` has one already).
        task: `"classification"` or `"regression"`: a preset of the loss (cross-entropy, MSE),
            metrics (accuracy, MAE) and monitored value, for what is not given.
        monitor: The logged value that decides the best weights in `dir` (default
            `"val_loss"`; `"val_accuracy"` for classification).

    Example:
        >>> import torch, kiln
        >>> X, Y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> trainer = kiln.Trainer(torch.nn.Linear(4, 3), loss="cross_entropy",
        ...                        metrics=["accuracy"], device="cpu", progress=False)
        >>> history = trainer.fit((X, Y), val=0.25, epochs=2)
        >>> len(history), sorted(trainer.evaluate((X, Y)))
        (2, ['accuracy', 'loss'])
        >>> trainer.predict(X).shape
        torch.Size([64, 3])
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Any = None,
        optimizer: OptimizerSpec | None = "adam",
        lr: float | None = None,
        metrics: Any = None,
        callbacks: Iterable[Any] | None = None,
        device: str | int | bool | torch.device | None = "auto",
        dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        task: str | None = None,
        monitor: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module; received {type(model).__name__}.")
        loss, metrics, self.monitor = experiment.resolve_task(task, loss, metrics, monitor)
        self.device = resolve_device(device)
        self.dir = None if dir is None else Path(dir)
        self.model = model.to(self.device)
        self.loss: LossFunction | None = resolve_loss(loss)
        self.optimizer = None if optimizer is None else resolve_optimizer(optimizer, model, lr)
        logits = self.loss is not None and "logits" in self.loss.name.lower()
        self.metrics = resolve_metrics(metrics, logits=logits)
        callbacks = list(callbacks or [])
        if progress and not any(isinstance(cb, ProgressBar) for cb in callbacks):
            callbacks.insert(0, ProgressBar())
        if self.dir is not None:
            callbacks += experiment.directory_callbacks(self.monitor, callbacks)
        self.callbacks = callbacks
        self.state = TrainState()
        self.history = History()
        metrics = self.metrics  # validation gets copies, so both passes' values coexist
        self._trackers = {
            TRAIN: PassTracker(metrics),
            VALIDATION: PassTracker(copy.deepcopy(metrics)),
        }
        self._unchecked: set[str] = set()  # passes whose first step is still to be checked
        self._model_steps = find_model_steps(self.model)
        self._position = PassPosition()

    @property
    def callbacks(self) -> CallbackList:
        """The callbacks, called in order; assign a list to replace them."""
        return self._callbacks

    @callbacks.setter
    def callbacks(self, callbacks: Iterable[Any]) -> None:
        self._callbacks = CallbackList(callbacks)

    def _emit(self, event: Event) -> None:
        self._callbacks(event, self)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop after the current batch (and log its epoch), for `reason` (`state.stop_reason`)."""
        if not self.state.should_stop:
            self.state.should_stop, self.state.stop_reason = True, reason

    def fit(
        self,
        train: Any,
        val: Any = None,
        epochs: int = 1,
        resume: bool = False,
        *,
        batch_size: int | None = None,
    ) -> History:
        """Train for `epochs` epochs, validating after each when `val` is given.

        The epoch counter carries across calls: a second `fit(epochs=5)` trains epochs 6 to 10,
        and the returned history holds all of them.

        Args:
            train: The training data: a `kiln.Data`, a `DataLoader`, a `Dataset`, or a tuple
                `(X, Y)` / `(X, W, Y)` of tensors or numpy arrays (shuffled at every epoch).
            val: Validation data of the same kinds, or a fraction of `train` to hold out (the
                same samples on every run).
            epochs: How many epochs to train in this call; with `resume=True`, the total
                epoch count of the run, of which the saved epochs are already done.
            resume: Continue the run saved in `dir` (a later run of the same script after a
                crash or a kill); with nothing saved yet, start from scratch. A run that ended
                (early stopping, for instance) stays ended.
            batch_size: Samples per batch for tensors, arrays and Datasets (default 32).

        Returns:
            The history of every epoch this trainer has trained.

        Raises:
            ValueError: For bad input, before the first optimizer step (see the messages).
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
            raise ValueError(f"`epochs` must be a positive integer; received {epochs!r}.")
        check_can_train(self.optimizer, self.loss, self.defines("training_step"))
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            train, val = hold_out(train, val)
        train_batches = as_batches(train, "train", batch_size, shuffle=True)
        val_batches = None if val is None else as_batches(val, "val", batch_size, shuffle=False)
        state = self.state
        state.should_stop, state.stop_reason, state.error = False, None, None
        if self.dir is not None:
            checkpoints.prepare_directory(self.dir)  # fails before training if it cannot be written
        state.resumed = resume and checkpoints.resume_run(self, self.dir)
        state.max_epochs = epochs if resume else state.epoch + epochs
        state.num_batches = num_batches(train_batches)
        self._unchecked = {TRAIN, VALIDATION}
        state.val_data = val_batches
        self._emit(Event.FIT_START)
        try:
            while state.epoch < state.max_epochs and not state.should_stop:
                started = time.perf_counter()
                self._train_epoch(train_batches)
                if val_batches is not None:
                    self._validate(val_batches)
                state.logs["time"] = time.perf_counter() - started
                self.history.append(state.logs)
                self._emit(Event.EPOCH_END)
                if self.dir is not None:  # after the callbacks, so their state is saved too
                    checkpoints.save_last(self, self.dir)
        except BaseException as error:
            state.error = error
            self._emit(Event.EXCEPTION)
            raise
        finally:
            state.stage, state.batch = None, None
            self._emit(Event.FIT_END)
        return self.history

    def _train_epoch(self, batches: Iterable[Any]) -> None:
        state, callbacks, optimizer = self.state, self._callbacks, self.optimizer
        if optimizer is None:  # checked by fit; tells the type checker
            raise RuntimeError("fit needs an optimizer")
        tracker = self._begin_pass(TRAIN, batches)
        self.model.train()
        set_epoch(batches, state.epoch)
        state.logs = {}
        self._emit(Event.TRAIN_EPOCH_START)
        # Unused per-batch events are skipped without a call (see Event's docstring).
        batch_start = callbacks.uses(Event.TRAIN_BATCH_START)
        before_step = callbacks.uses(Event.BEFORE_OPTIMIZER_STEP)
        batch_end = callbacks.uses(Event.TRAIN_BATCH_END)
        # From the first batch, or from where a mid-epoch checkpoint left off.
        iterator, first = self._position.begin(batches, tracker, self.device)
        for batch_idx, batch in enumerate(on_device(iterator, self.device), first):
            state.batch_idx, state.batch = batch_idx, batch
            if batch_start:
                callbacks(Event.TRAIN_BATCH_START, self)
            output = self._run_step(TRAIN, batch, batch_idx)
            output.loss.backward()  # type: ignore[union-attr]  # checked on the first batch
            if before_step:
                callbacks(Event.BEFORE_OPTIMIZER_STEP, self)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.samples += output.size
            state.output = output
            tracker.update(output)
            if batch_end:
                callbacks(Event.TRAIN_BATCH_END, self)
            if state.should_stop:
                break
        state.epoch += 1
        state.logs = {
            "epoch": state.epoch,
            **tracker.compute(),
            "lr": float(optimizer.param_groups[0]["lr"]),
        }
        self.history.batch_losses.extend(tracker.batch_losses())
        state.stage = None
        self._emit(Event.TRAIN_EPOCH_END)

    def _validate(self, batches: Iterable[Any]) -> None:
        self.state.stage = VALIDATION
        self._emit(Event.VALIDATION_START)
        values = self._evaluate_pass(batches, emit=True)
        self.state.logs.update({f"val_{key}": value for key, value in values.items()})
        self.state.stage = None
        self._emit(Event.VALIDATION_END)

    def _evaluate_pass(self, batches: Iterable[Any], emit: bool) -> dict[str, float]:
        state, callbacks = self.state, self._callbacks
        tracker = self._begin_pass(VALIDATION, batches)
        batch_end = emit and callbacks.uses(Event.VALIDATION_BATCH_END)
        self.model.eval()
        with torch.inference_mode():
            for batch_idx, batch in enumerate(on_device(batches, self.device)):
                state.batch_idx, state.batch = batch_idx, batch
                output = self._run_step(VALIDATION, batch, batch_idx)
                state.output = output
                tracker.update(output)
                if batch_end:
                    callbacks(Event.VALIDATION_BATCH_END, self)
        if tracker.samples == 0:
            raise ValueError("The evaluation data yielded no batches; there is nothing to measure.")
        return tracker.compute()

    def _begin_pass(self, stage: str, batches: Iterable[Any]) -> PassTracker:
        self.state.stage, self.state.batch_idx, self.state.data = stage, 0, batches
        self._model_steps = find_model_steps(self.model)
        if self.loss is not None:
            self.loss.armed = True  # check the first batch of every pass
        tracker = self._trackers[stage]
        tracker.reset()
        return tracker

    def _run_step(self, stage: str, batch: Any, batch_idx: int) -> StepOutput:
        """Run the stage's step method; on the first batch, explain what goes wrong."""
        method = self.training_step if stage == TRAIN else self.validation_step
        name = "training_step" if stage == TRAIN else "validation_step"
        if stage not in self._unchecked:
            return to_step_output(method(batch, batch_idx), batch, name)
        self._unchecked.discard(stage)
        return run_first_step(self, method, name, batch, batch_idx)

    def defines(self, method: str) -> bool:
        """Whether the model, or a subclass of Trainer, provides its own `method`."""
        overridden = getattr(type(self), method) is not getattr(Trainer, method)
        return overridden or callable(getattr(self.model, method, None))

    def training_step(self, batch: Any, batch_idx: int) -> StepResult:
        """Compute the loss of one training batch (the trainer then runs backward and the step).

        By default: the model's own `training_step` when it has one, else `loss(model(x), y)`.
        Override it in a subclass to change what happens to a batch; return the loss, a dict
        with `"loss"` (and `"output"`/`"target"` for metrics, and other values to log), or a
        `StepOutput`.
        """
        model_step = self._model_steps["training_step"]
        if model_step is not None:
            return model_step(batch, batch_idx)  # type: ignore[no-any-return]
        return supervised_step(self.model, self.loss, batch)

    def validation_step(self, batch: Any, batch_idx: int) -> StepResult:
        """Compute the loss and values of one validation or evaluation batch.

        Runs with the model in eval mode and without gradients. By default: the model's
        `validation_step` when it has one, else `training_step`.
        """
        model_step = self._model_steps["validation_step"]
        if model_step is not None:
            return model_step(batch, batch_idx)  # type: ignore[no-any-return]
        return self.training_step(batch, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """Return the predictions for one batch.

        By default: the model's `predict_step` when it has one, else the model's output on the
        batch's inputs, post-processed by the loss where the loss defines `postproc`.
        """
        model_step = self._model_steps["predict_step"]
        if model_step is not None:
            return model_step(batch, batch_idx)
        return prediction_step(self.model, self.loss, batch)

    def evaluate(self, data: Any, *, batch_size: int | None = None) -> Evaluation:
        """Measure the loss and metrics on `data`, with the model in eval mode.

        Args:
            data: A `kiln.Data`, a `DataLoader`, a `Dataset`, or a tuple `(X, Y)` of tensors or
                arrays.
            batch_size: Samples per batch for tensors, arrays and Datasets (default 32).

        Returns:
            The values, by name without prefix: `evaluation.loss`, `evaluation.accuracy`.
        """
        batches = as_batches(data, "data", batch_size, shuffle=False)
        self._unchecked.add(VALIDATION)
        return Evaluation(self._evaluate_pass(batches, emit=False))

    def predict(self, inputs: Any, *, batch_size: int | None = None) -> Any:
        """Return the model's predictions, concatenated over batches, on the CPU.

        Args:
            inputs: The model's inputs: a tensor or array, a tuple or list of them for a model
                with several inputs, or a dict of them for keyword inputs. Or a `Data`,
                `DataLoader` or `Dataset` whose batches follow the training format (`(x, y)`:
                the targets are ignored).
            batch_size: Samples per batch for raw inputs (default 256) and Datasets.

        Returns:
            A tensor (or the structure the model returns, each part concatenated).
        """
        batches = iterate_inputs(inputs, batch_size)
        self._model_steps = find_model_steps(self.model)
        outputs = []
        self.model.eval()
        with torch.inference_mode():
            for batch_idx, batch in enumerate(on_device(batches, self.device)):
                outputs.append(self.predict_step(batch, batch_idx))
        if not outputs:
            raise ValueError("`predict` received no samples.")
        return to_device(concat_outputs(outputs), torch.device("cpu"))

    def __repr__(self) -> str:
        return f"Trainer({type(self.model).__name__}, loss={self.loss}, device={self.device})"
