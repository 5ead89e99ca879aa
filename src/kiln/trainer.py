"""The `Trainer`: `fit`, `evaluate` and `predict`, with the training loop read top to bottom.

Glossary, used the same way everywhere in kiln:

- **batch**: one item from the data (a slice of `Data`, one `DataLoader` item);
- **step**: one optimizer update (one batch here; several with gradient accumulation);
- **epoch**: one pass over the training data, followed by validation when there is any;
- **pass**: one iteration over some data (training, validation, evaluation or prediction).

What lives here: the loop. What does not: batches (`batch.py`, `passes.py`), the step methods
(`step.py`), optimizer steps (`optimizer_step.py`, `acceleration.py`), options, signals
(`loop_options.py`, `interrupts.py`), values (`tracking.py`), first-batch checks
(`diagnostics.py`), callbacks (`callbacks/`), files (`trainer_files.py`, `experiment.py`),
schedules, the LR finder and the summary (`trainer_tools.py`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kiln.callbacks.dispatch import CallbackList
from kiln.callbacks.progress import ProgressBar
from kiln.checkpoint import directory as experiment_directory
from kiln.checkpoint import run as checkpoints
from kiln.data.batch import on_device
from kiln.data.sources import as_batches, hold_out, num_batches
from kiln.distributed.context import setup
from kiln.distributed.replicas import Replicas
from kiln.events import Event
from kiln.history import History
from kiln.loop.batch_step import StepMethods, StepOutput, find_model_steps, to_step_output
from kiln.loop.first_batch import check_can_train, run_first_step
from kiln.loop.optimizer_step import Stepper
from kiln.loop.passes import repeated, start_epoch, with_switch_state
from kiln.loop.position import PassPosition
from kiln.loop.precision import compile_model
from kiln.loop.signals import stop_on_signals
from kiln.loop.tracking import PassTracker
from kiln.losses import LossFunction, resolve_loss
from kiln.metrics import resolve_metrics
from kiln.optim import resolve_optimizer
from kiln.optim.names import OptimizerSpec
from kiln.options import FitOptions, StepOptions, apply_task_preset, spent_budget
from kiln.prediction import Predicting
from kiln.saving.components import metric_flags
from kiln.state import TrainState
from kiln.trainer_evaluate import Evaluating
from kiln.trainer_files import TrainerFiles
from kiln.trainer_tools import TrainerTools

TRAIN, VALIDATION = "train", "validation"


class Trainer(StepMethods, Evaluating, Predicting, TrainerFiles, TrainerTools):
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
            are kept there too (`kiln.checkpoint.directory` has the layout). `None`: nothing on
            disk.
        progress: Add a `ProgressBar` (unless `callbacks` has one already).
        task: `"classification"` or `"regression"`: a preset of the loss (cross-entropy, MSE),
            metrics (accuracy, MAE) and monitored value, for what is not given.
        monitor: The logged value that decides the best weights in `dir` (default
            `"val_loss"`; `"val_accuracy"` for classification).
        precision: `"32"`, `"bf16"` (bfloat16 autocast, CPU or CUDA) or `"fp16"` (float16
            autocast with a gradient scaler, CUDA).
        accumulate: Batches per optimizer step (each loss divided by its group's size).
        clip_norm: Clip the gradients' total norm to this, after `before_optimizer_step`.
        clip_value: Clip each gradient element to `[-clip_value, clip_value]` instead.
        nonfinite: A NaN or infinite training loss: `"raise"` stops with `FloatingPointError`
            before the optimizer step; `"skip"` leaves the batch out (`skipped_batches`), on
            every rank if its loss is not finite on any.
        compile: Compile the model's forward with `torch.compile` (eager if that fails).
        strategy: Under `torchrun` (`WORLD_SIZE` > 1): `"ddp"`, or `"fsdp"` to shard the
            parameters over the ranks (see `kiln.distributed`).

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
        *,
        precision: str = "32",
        accumulate: int = 1,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        nonfinite: str = "raise",
        compile: bool = False,
        strategy: str = "ddp",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module; received {type(model).__name__}.")
        options = StepOptions(precision, accumulate, clip_norm, clip_value, nonfinite, compile)
        loss, metrics, self.monitor = apply_task_preset(task, loss, metrics, monitor)
        self.distributed = setup(device)  # under torchrun: joins the group; else one process
        self.device, self._replicas = self.distributed.device, Replicas(self.distributed, strategy)
        self.dir = None if dir is None else Path(dir)
        self.model = self._replicas.place(model.to(self.device), optimizer)  # fsdp: sharded
        if compile:
            compile_model(self.model)
        self.loss: LossFunction | None = resolve_loss(loss)
        self.optimizer = None if optimizer is None else resolve_optimizer(optimizer, model, lr)
        self._steps = Stepper(options, self.optimizer, self.device, self._replicas)
        self.metrics = resolve_metrics(metrics, **metric_flags(self.loss))
        callbacks = list(callbacks or [])
        if progress and not any(isinstance(cb, ProgressBar) for cb in callbacks):
            callbacks.insert(0, ProgressBar())
        if self.dir is not None:
            callbacks += experiment_directory.directory_callbacks(self.monitor, callbacks)
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
        self._dispatch = CallbackList(self._replicas.active(self._callbacks))  # this rank's

    def _emit(self, event: Event) -> None:
        self._dispatch(event, self)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop after the current optimizer step (and log its epoch), for good, for `reason`."""
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
        val_every: int = 1,
        pre_val: bool = False,
        max_steps: int | None = None,
        max_samples: int | None = None,
        repeat_train: int = 1,
        repeat_val: int = 1,
        epoch_hook: Callable[[Trainer], Any] | None = None,
    ) -> History:
        """Train for `epochs` epochs, validating after each when `val` is given.

        The epoch counter carries across calls: a second `fit(epochs=5)` trains epochs 6 to 10,
        and the returned history holds all of them. SIGINT (Ctrl-C) or SIGTERM stops the run
        after the current step: the unfinished epoch is saved (with `dir`: `resume=True` goes
        on from that batch), then logged without validation; a second signal aborts at once.

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
            val_every: Validate after every this many epochs (and after the last).
            pre_val: Validate before training (not on resume), into `state.pre_val_logs`.
            max_steps: Stop after this many optimizer steps, also inside an epoch (which is
                then logged as done); with `resume=True`, steps of the whole run.
            max_samples: Stop after this many training samples, counted the same way.
            repeat_train: Passes over `train` in one epoch; the logs average all of them.
            repeat_val: Passes over `val` in one validation, averaged the same way.
            epoch_hook: `hook(trainer)`, called after each epoch's values are computed.

        Returns:
            The history of every epoch this trainer has trained.

        Raises:
            ValueError: For bad input, before the first optimizer step (see the messages).
            FloatingPointError: For a NaN or infinite loss, with `nonfinite="raise"`.
        """
        options = FitOptions(
            epochs, val_every, pre_val, max_steps, max_samples, repeat_train, repeat_val, epoch_hook
        )
        check_can_train(self.optimizer, self.loss, self.defines("training_step"))
        options.check_validation_data(val is not None)
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            train, val = hold_out(train, val)
        train_batches = as_batches(train, "train", batch_size, True)
        val_batches = None if val is None else as_batches(val, "val", batch_size, False)
        state = self.state
        state.reset_stop()  # of a previous fit
        if self.dir is not None:
            checkpoints.prepare_directory(self.dir)  # fails before training if it cannot be written
        state.resumed = resume and checkpoints.resume_run(self, self.dir)
        self._replicas.prepare(self.model)  # several processes: DDP, each rank its data
        train_batches = repeated(self._replicas.shard(train_batches, train=True), repeat_train)
        val_batches = self._replicas.shard(val_batches, train=False)
        val_batches = None if val_batches is None else repeated(val_batches, repeat_val)
        options.set_limits(state, resume)  # max_epochs, max_steps, max_samples
        state.num_batches = num_batches(train_batches)
        self._unchecked = {TRAIN, VALIDATION}
        state.val_data = val_batches
        self._emit(Event.FIT_START)
        try:
            # Under torchrun, signals are torchrun's: it stops every rank, `resume` goes on.
            with contextlib.nullcontext() if self._replicas.enabled else stop_on_signals(self):
                if pre_val and val_batches is not None and not state.resumed:
                    state.logs = {"epoch": state.epoch}
                    self._validate(val_batches)
                    state.pre_val_logs = dict(state.logs)
                while state.epoch < state.max_epochs and not self._should_stop():
                    started = time.perf_counter()
                    self._train_epoch(train_batches)
                    paused = state.interrupt is not None  # a signal: the epoch is saved unfinished
                    if val_batches is not None and not paused and options.validates(state):
                        self._validate(val_batches)
                    state.logs["time"] = time.perf_counter() - started
                    self.history.append(state.logs)
                    if epoch_hook is not None:
                        epoch_hook(self)
                    self._emit(Event.EPOCH_END)
                    self._replicas.agree_stop(self)  # a stop on any rank stops every rank
                    if self.dir is not None and not paused:  # after the callbacks: saves them too
                        checkpoints.save_last(self, self.dir)
        except BaseException as error:
            state.error = error
            self._emit(Event.EXCEPTION)
            raise
        finally:
            state.stage, state.batch = None, None
            self._emit(Event.FIT_END)
        return self.history

    def _should_stop(self) -> bool:
        """Whether a stop was requested, or a budget is spent (a stop `resume=True` continues)."""
        spent = None if self.state.should_stop else spent_budget(self.state)
        if spent is not None:
            self.request_stop(spent)
            self.state.stop_resumable = True
        return self.state.should_stop

    def _train_epoch(self, batches: Iterable[Any]) -> None:
        state, callbacks, steps = self.state, self._dispatch, self._steps
        world = self.distributed.world_size  # counters count the samples of every rank
        tracker = self._begin_pass(TRAIN, batches)
        self.model.train()
        start_epoch(batches, state.epoch)
        state.logs = {}
        self._emit(Event.TRAIN_EPOCH_START)
        # Unused per-batch events are skipped without a call (see Event's docstring).
        batch_start = callbacks.uses(Event.TRAIN_BATCH_START)
        batch_end = callbacks.uses(Event.TRAIN_BATCH_END)
        uses_before = callbacks.uses(Event.BEFORE_OPTIMIZER_STEP)
        before_step = partial(callbacks, Event.BEFORE_OPTIMIZER_STEP, self) if uses_before else None
        budget = state.max_steps is not None or state.max_samples is not None
        # From the first batch, or from where a mid-epoch checkpoint left off.
        iterator, first = self._position.begin(batches, tracker, self.device)
        source = with_switch_state(iterator, batches, state.num_batches, first)
        steps.begin_pass(self.optimizer, state.num_batches, first, tracker, state.epoch)
        for batch_idx, batch in enumerate(on_device(source, self.device), first):
            state.batch_idx, state.batch = batch_idx, batch
            if batch_start:
                callbacks(Event.TRAIN_BATCH_START, self)
            with steps.gradient_sync(batch_idx):  # several ranks: reduced at a group's end
                with steps.autocast:
                    output = self._run_step(TRAIN, batch, batch_idx)
                output = steps.backward(output, state)  # checks the loss, divides it to accumulate
            group_end = steps.ends_group(batch_idx)
            if group_end and steps.step(before_step):  # unscale, BEFORE_OPTIMIZER_STEP, clip
                state.step += 1
            state.samples += output.size * world
            state.output = output
            tracker.update(output)
            if batch_end:
                callbacks(Event.TRAIN_BATCH_END, self)
            stopping = group_end and (state.should_stop or budget)
            if stopping and self._replicas.stops_now(self, budget):
                break
        else:
            state.step += steps.finish_pass(before_step)  # a short last group of unsized data
        if state.interrupt is not None and self.dir is not None:
            checkpoints.save_last(self, self.dir)  # unfinished: `resume=True` goes on from here
        state.epoch += 1
        self._replicas.align_buffers(self.model)  # ddp: rank 0's BatchNorm statistics everywhere
        self._replicas.sync(tracker)  # several processes: the sums of every rank
        values = tracker.compute()
        state.logs = {"epoch": state.epoch, **values, **steps.end_pass(values, state)}
        state.logs["lr"] = float(self.optimizer.param_groups[0]["lr"])  # type: ignore[union-attr]
        self.history.batch_losses.extend(tracker.batch_losses())
        state.stage = None
        self._emit(Event.TRAIN_EPOCH_END)

    def _validate(self, batches: Iterable[Any]) -> None:
        self.state.stage = VALIDATION
        self._emit(Event.VALIDATION_START)
        values = self._evaluate_pass(batches, emit=True)
        self._steps.check_validation(values, self.state)
        self.state.logs.update({f"val_{key}": value for key, value in values.items()})
        self.state.stage = None
        self._emit(Event.VALIDATION_END)

    def _evaluate_pass(self, batches: Iterable[Any], emit: bool) -> dict[str, float]:
        state, callbacks = self.state, self._dispatch
        tracker = self._begin_pass(VALIDATION, batches)
        batch_end = emit and callbacks.uses(Event.VALIDATION_BATCH_END)
        self.model.eval()
        source = with_switch_state(batches, batches, num_batches(batches), 0)
        with torch.inference_mode(), self._steps.autocast:
            for batch_idx, batch in enumerate(on_device(source, self.device)):
                state.batch_idx, state.batch = batch_idx, batch
                output = self._run_step(VALIDATION, batch, batch_idx)
                state.output = output
                tracker.update(output)
                if batch_end:
                    callbacks(Event.VALIDATION_BATCH_END, self)
        self._replicas.sync(tracker)
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
        train = stage == TRAIN
        method = self._replicas.training_step(self.training_step) if train else self.validation_step
        name = "training_step" if train else "validation_step"
        if stage not in self._unchecked:
            return to_step_output(method(batch, batch_idx), batch, name)
        self._unchecked.discard(stage)
        return run_first_step(self, method, name, batch, batch_idx)

    def __repr__(self) -> str:
        return f"Trainer({type(self.model).__name__}, loss={self.loss}, device={self.device})"
