"""The `Trainer`: `fit`, `evaluate` and `predict`, with the training loop read top to bottom.

Glossary, used the same way everywhere in kiln:

- **batch**: one item from the data (a slice of `Data`, one `DataLoader` item);
- **step**: one optimizer update (one batch here; several with gradient accumulation);
- **epoch**: one pass over the training data, followed by validation when there is any;
- **pass**: one iteration over some data (training, validation, evaluation or prediction).

What lives here: the `Trainer` class, its loop and its state. What each batch goes through is in
`loop/` (its `__init__` lists the path of a batch); where batches come from, in `data/`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kiln.callbacks.dispatch import CallbackList
from kiln.callbacks.lr_scheduler import LRScheduler
from kiln.callbacks.progress import ProgressBar
from kiln.checkpoint import directory as experiment_directory
from kiln.checkpoint import run as checkpoints
from kiln.data.batch import concat_outputs, on_device, to_device
from kiln.data.repeated import unrepeated
from kiln.data.sources import as_batches, hold_out, iterate_inputs, num_batches
from kiln.deprecation import fit_epoch_hook, keywords_after
from kiln.devices import check_materialized
from kiln.distributed.context import is_main_process, setup
from kiln.distributed.replicas import Replicas
from kiln.events import Event
from kiln.history import Evaluation, History
from kiln.loop.first_batch import check_can_train, run_first_batch, run_first_prediction
from kiln.loop.optimizer_step import OptimizerStepper
from kiln.loop.passes import repeated, start_epoch, with_switch_state
from kiln.loop.position import PassPosition
from kiln.loop.precision import compile_model, full_precision
from kiln.loop.signals import stop_on_signals
from kiln.loop.step_methods import (
    StepOutput,
    StepResult,
    find_model_hooks,
    prediction_step,
    supervised_step,
    to_step_output,
)
from kiln.loop.tracking import PassTracker
from kiln.losses import LossFunction, resolve_loss
from kiln.metrics import resolve_metrics
from kiln.optim import resolve_optimizer
from kiln.optim.names import OptimizerSpec
from kiln.optim.rebind import rebind
from kiln.options import (
    FitOptions,
    LoopOptions,
    apply_task_preset,
    loop_options,
    spent_budget,
)
from kiln.saving import trainer_file
from kiln.saving.components import metric_flags
from kiln.saving.export import export_weights
from kiln.saving.serving import SERVING_SUFFIXES, example_of, export_program
from kiln.seed import get_rng_state, set_rng_state
from kiln.state import TrainState

if TYPE_CHECKING:
    from kiln.tools.lr_finder import LRFinderResult
    from kiln.tools.summary import ModelSummary

TRAIN, VALIDATION = "train", "validation"
#: What `Trainer(...)` took by position after `optimizer` before they became keyword-only.
_FORMERLY_POSITIONAL = (
    "lr",
    "metrics",
    "callbacks",
    "device",
    "dir",
    "progress",
    "task",
    "monitor",
)


class Trainer:
    """Train, evaluate and run a PyTorch model.

    Three ways in, one loop: wrap a plain network with a loss and metrics; let the model
    define `training_step(batch, batch_idx)` returning a loss or a dict with `"loss"` and other
    values to log; or subclass `Trainer` and override `training_step`, `validation_step` and
    `predict_step` to change what happens to a batch, while the trainer keeps backward, the
    optimizer and callbacks.

    The model, the loss and the optimizer may be given by position; everything else is a
    keyword. The loop options (`precision` to `compile`) are the fields of `kiln.LoopOptions`:
    pass them as keywords, or all at once as `options=LoopOptions(...)`.

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
            disk. A directory that holds a run is never silently replaced: a new trainer's
            `fit` there refuses to start unless `resume=True` or `overwrite=True`.
        overwrite: Let a new run replace the run saved in `dir` (its `last.ckpt`, best
            checkpoints and logs) instead of refusing.
        progress: Add a `ProgressBar` (unless `callbacks` has one already).
        task: `"classification"` or `"regression"`: a preset of the loss (cross-entropy, MSE),
            metrics (accuracy, MAE) and monitored value, for what is not given.
        monitor: The logged value that decides the best weights in `dir` (default
            `"val_loss"`; `"val_accuracy"` for classification).
        options: The loop options as one `kiln.LoopOptions`, instead of the keywords below.
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
        >>> len(history), sorted(trainer.evaluate((X, Y)).keys())
        (2, ['accuracy', 'loss'])
        >>> trainer.predict(X).shape
        torch.Size([64, 3])
    """

    @keywords_after(4, _FORMERLY_POSITIONAL, "Trainer(...)")
    def __init__(
        self,
        model: nn.Module,
        loss: Any = None,
        optimizer: OptimizerSpec | None = "adam",
        *,
        lr: float | None = None,
        metrics: Any = None,
        callbacks: Iterable[Any] | None = None,
        device: str | int | bool | torch.device | None = "auto",
        dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        progress: bool = True,
        task: str | None = None,
        monitor: str | None = None,
        options: LoopOptions | None = None,
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
        flat = LoopOptions(precision, accumulate, clip_norm, clip_value, nonfinite, compile)
        options = loop_options(options, flat)
        compile = options.compile
        loss, metrics, self.monitor = apply_task_preset(task, loss, metrics, monitor)
        self.distributed = setup(device)  # under torchrun: joins the group; else one process
        self._device, self._replicas = self.distributed.device, Replicas(self.distributed, strategy)
        self._dir = None if dir is None else Path(dir)
        self.overwrite = overwrite
        check_materialized(model)  # a model on the meta device has no values to train
        self._model = self._replicas.place(model.to(self.device), optimizer)  # fsdp: sharded
        if compile:
            compile_model(self.model)
        self._loss: LossFunction | None = resolve_loss(loss)
        self._optimizer = None if optimizer is None else resolve_optimizer(optimizer, model, lr)
        self._stepper = OptimizerStepper(options, self.optimizer, self.device, self._replicas)
        self.metrics = metrics  # resolved, with a tracker for each pass
        given = list(callbacks or [])
        has_bar = any(isinstance(callback, ProgressBar) for callback in given)
        bar = [ProgressBar()] if progress and not has_bar else []
        directory = (
            []
            if self.dir is None
            else experiment_directory.directory_callbacks(self.monitor, given)
        )
        self._added: list[Any] = [*bar, *directory]  # the trainer's own callbacks
        self._set_callbacks([*bar, *given, *directory])
        self.state = TrainState()
        self.history = History()
        self._unchecked: set[str] = set()  # passes whose first batch is still to be checked
        self._example_inputs: Any = None  # rows of the inputs last seen: `export`'s example
        self._model_hooks = find_model_hooks(self.model)
        self._position = PassPosition()
        self._unattached_schedule: LRScheduler | None = None  # see `schedules`
        self._data_batches: int | None = None  # batches of the training data, before sharding

    # What a user may assign: each assignment does all it takes, or is refused with a reason.

    @property
    def model(self) -> nn.Module:
        """The network.

        Assigning a model of the same architecture (`trainer.model = copy.deepcopy(best)`, to
        roll back to the best weights) trains it from then on: it moves to the trainer's
        device, and the optimizer steps its parameters, with the state it had for the old
        ones. Another architecture is refused: build a new `Trainer` for it.
        """
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module; received {type(model).__name__}.")
        if self._replicas.enabled:
            raise ValueError(
                "Under torchrun the trainer's model is wrapped for every process: build a new "
                "Trainer with the other model instead of assigning `trainer.model`."
            )
        check_materialized(model)
        model = model.to(self.device)
        if self._optimizer is not None:
            rebind(self._optimizer, self._model, model)
        self._model = model
        self._model_hooks = find_model_hooks(model)

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer. Assign another (an instance, a name, a callable) to step with it."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer: OptimizerSpec | None) -> None:
        self._optimizer = (
            None if optimizer is None else resolve_optimizer(optimizer, self.model, None)
        )

    @property
    def loss(self) -> LossFunction | None:
        """The loss. Assign a name, a loss module or a callable, as `Trainer(loss=...)` takes."""
        return self._loss

    @loss.setter
    def loss(self, loss: Any) -> None:
        self._loss = resolve_loss(loss)

    @property
    def metrics(self) -> Any:
        """The metrics. Assign names or metric objects, as `Trainer(metrics=...)` takes."""
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: Any) -> None:
        self._metrics = resolve_metrics(metrics, **metric_flags(self._loss))
        self._trackers = {
            TRAIN: PassTracker(self._metrics),
            # Validation gets copies, so that both passes' values coexist.
            VALIDATION: PassTracker(copy.deepcopy(self._metrics)),
        }

    @property
    def device(self) -> torch.device:
        """Where the model and the batches live, chosen when the trainer is built."""
        return self._device

    @device.setter
    def device(self, device: Any) -> None:
        raise AttributeError(
            f"`trainer.device` is fixed when the trainer is built (received {device!r}): the "
            "model, the optimizer's state and autocast follow it. Build a new "
            "Trainer(model, ..., device=...) to train elsewhere."
        )

    @property
    def dir(self) -> Path | None:
        """The experiment directory, chosen when the trainer is built (see `Trainer`)."""
        return self._dir

    @dir.setter
    def dir(self, directory: Any) -> None:
        raise AttributeError(
            f"`trainer.dir` is fixed when the trainer is built (received {directory!r}): the "
            "directory's checkpoint, best weights and log come with it. Build a new "
            "Trainer(..., dir=...) for another directory."
        )

    @property
    def callbacks(self) -> CallbackList:
        """The callbacks, called in order, the trainer's own among them.

        The trainer adds a `ProgressBar` (`progress=True`), the directory's callbacks (with
        `dir`) and the schedule set through `schedules`. Assigning a list replaces them all:
        a warning names those of the trainer's own that the list leaves out. To add one, write
        `trainer.callbacks = [*trainer.callbacks, callback]`.
        """
        return self._callbacks

    @callbacks.setter
    def callbacks(self, callbacks: Iterable[Any]) -> None:
        callbacks = list(callbacks)
        dropped = [cb for cb in self._added if cb in self._callbacks and cb not in callbacks]
        if dropped:
            names = ", ".join(type(callback).__name__ for callback in dropped)
            warnings.warn(
                f"`trainer.callbacks = [...]` replaced every callback, and {names} that the "
                "trainer added are gone. To add callbacks and keep them, write "
                "`trainer.callbacks = [*trainer.callbacks, ...]`.",
                UserWarning,
                stacklevel=2,
            )
        self._set_callbacks(callbacks)

    def _set_callbacks(self, callbacks: Iterable[Any]) -> None:
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
        **deprecated: Any,
    ) -> History:
        """Train for `epochs` epochs, validating after each when `val` is given.

        The epoch counter carries across calls: a second `fit(epochs=5)` trains epochs 6 to 10,
        and the returned history holds all of them. SIGINT (Ctrl-C) or SIGTERM stops the run
        after the current step: the unfinished epoch is saved (with `dir`: `resume=True` goes
        on from that batch), then logged without validation; a second signal aborts at once.

        Args:
            train: The training data: a `kiln.Data`, a `DataLoader`, a `Dataset`, or a tuple
                `(X, Y)` / `(X, W, Y)` of tensors or numpy arrays (shuffled at every epoch);
                `kiln.repeat(data, n)` for `n` passes an epoch.
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
            **deprecated: `repeat_train=n` and `repeat_val=n` (now `kiln.repeat(data, n)`) and
                `epoch_hook=fn` (now a callback's `on_epoch_end`) still work, with a warning.

        Returns:
            The history of every epoch this trainer has trained.

        Raises:
            ValueError: For bad input, before the first optimizer step (see the messages).
            FloatingPointError: For a NaN or infinite loss, with `nonfinite="raise"`.
        """
        train, repeat_train = unrepeated(train, deprecated.pop("repeat_train", None))
        val, repeat_val = unrepeated(val, deprecated.pop("repeat_val", None))
        epoch_hook = fit_epoch_hook(deprecated)
        options = FitOptions(
            epochs, val_every, pre_val, max_steps, max_samples, repeat_train, repeat_val, epoch_hook
        )
        check_can_train(self.optimizer, self.loss, self.defines("training_step"), self.model)
        options.check_validation_data(val is not None)
        if not isinstance(val, bool) and isinstance(val, numbers.Real):  # NumPy's numbers too
            train, val = hold_out(train, float(val))
        train_batches = as_batches(train, "train", batch_size, True)
        val_batches = None if val is None else as_batches(val, "val", batch_size, False)
        state = self.state
        state.reset_stop()  # of a previous fit
        self._attach_schedule()  # before a resume, which restores the callbacks' states
        if self.dir is not None:
            checkpoints.prepare_directory(self.dir)  # fails before training if it cannot be written
            if not resume and self.state.epoch == 0:  # a new run: never over another silently
                checkpoints.check_new_run(self.dir, self.overwrite)
        self._data_batches = num_batches(train_batches)  # checked against a mid-epoch resume
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

    def _stops_now(self, budget: bool) -> bool:
        """Whether the training pass stops after this optimizer step.

        In one process, for any stop; with several, only for a spent step or sample budget,
        whose counters are the same on every rank (other stops wait for the epoch's end, where
        the ranks agree).
        """
        if not self._replicas.enabled:
            return self.state.should_stop or (budget and self._should_stop())
        return budget and spent_budget(self.state) is not None and self._should_stop()

    def _train_epoch(self, batches: Iterable[Any]) -> None:
        state, callbacks, stepper = self.state, self._dispatch, self._stepper
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
        stepper.begin_pass(
            self.optimizer, state.num_batches, first, tracker, state.epoch, self.model
        )
        keep_buffers = stepper.keep_buffers()  # None for a model without buffers
        for batch_idx, batch in enumerate(on_device(source, self.device), first):
            state.batch_idx, state.batch = batch_idx, batch
            if batch_start:
                callbacks(Event.TRAIN_BATCH_START, self)
            if keep_buffers is not None:
                keep_buffers()  # a batch refused for its loss leaves BatchNorm's statistics
            with stepper.gradient_sync(batch_idx):  # several ranks: reduced at a group's end
                with stepper.autocast:
                    output = self._run_step_method(TRAIN, batch, batch_idx)
                output = stepper.backward(
                    output, state
                )  # checks the loss, divides it to accumulate
            group_end = stepper.ends_group(batch_idx)
            if group_end and stepper.step(before_step):  # unscale, BEFORE_OPTIMIZER_STEP, clip
                state.step += 1
            state.samples += output.size * world
            state.output = output
            tracker.update(output)
            if batch_end:
                callbacks(Event.TRAIN_BATCH_END, self)
            stopping = group_end and (state.should_stop or budget)
            if stopping and self._stops_now(budget):
                break
        else:
            state.step += stepper.finish_pass(before_step)  # a short last group of unsized data
        if state.interrupt is not None and self.dir is not None:
            checkpoints.save_last(self, self.dir)  # unfinished: `resume=True` goes on from here
        state.epoch += 1
        self._replicas.align_buffers(self.model)  # ddp: rank 0's BatchNorm statistics everywhere
        self._replicas.sync(tracker)  # several processes: the sums of every rank
        values = tracker.compute()
        state.logs = {"epoch": state.epoch, **values, **stepper.end_pass(values, state)}
        state.logs["lr"] = float(self.optimizer.param_groups[0]["lr"])  # type: ignore[union-attr]
        self.history.batch_losses.extend(tracker.batch_losses())
        state.stage = None
        self._emit(Event.TRAIN_EPOCH_END)

    def _validate(self, batches: Iterable[Any]) -> None:
        self.state.stage = VALIDATION
        self._emit(Event.VALIDATION_START)
        values = self._evaluate_pass(batches, emit=True)
        self._stepper.check_validation(values, self.state)
        self.state.logs.update({f"val_{key}": value for key, value in values.items()})
        self.state.stage = None
        self._emit(Event.VALIDATION_END)

    def _evaluate_pass(self, batches: Iterable[Any], emit: bool) -> dict[str, float]:
        state, callbacks = self.state, self._dispatch
        tracker = self._begin_pass(VALIDATION, batches)
        batch_end = emit and callbacks.uses(Event.VALIDATION_BATCH_END)
        self.model.eval()
        source = with_switch_state(batches, batches, num_batches(batches), 0)
        with torch.inference_mode(), self._stepper.autocast:
            for batch_idx, batch in enumerate(on_device(source, self.device)):
                state.batch_idx, state.batch = batch_idx, batch
                output = self._run_step_method(VALIDATION, batch, batch_idx)
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
        self._model_hooks = find_model_hooks(self.model)
        if self.loss is not None:
            self.loss.armed = True  # check the first batch of every pass
        tracker = self._trackers[stage]
        tracker.reset()
        return tracker

    def _run_step_method(self, stage: str, batch: Any, batch_idx: int) -> StepOutput:
        """Run the stage's step method; on the first batch, explain what goes wrong."""
        train = stage == TRAIN
        method = self._replicas.training_step(self.training_step) if train else self.validation_step
        name = "training_step" if train else "validation_step"
        if stage not in self._unchecked:
            return to_step_output(method(batch, batch_idx), batch, name)
        self._unchecked.discard(stage)
        self._example_inputs = example_of(batch)
        return run_first_batch(self, method, name, batch, batch_idx)

    # What happens to a batch: the three methods a subclass may override.

    def defines(self, method: str) -> bool:
        """Whether the model, or a subclass of Trainer, provides its own `method`."""
        overridden = getattr(type(self), method) is not getattr(Trainer, method)
        return overridden or callable(getattr(self.model, method, None))

    def training_step(self, batch: Any, batch_idx: int) -> StepResult:
        """Compute the loss of one training batch (the trainer then runs backward and the step).

        By default: the model's own `training_step` when it has one, else `loss(model(x), y)`.
        Override it in a subclass to change what happens to a batch; return the loss, a dict
        with `"loss"` (and `"output"`/`"target"` for metrics, and other values to log), or a
        `StepOutput`. The trainer keeps autocast, backward, accumulation, the optimizer and the
        callbacks.
        """
        model_hook = self._model_hooks["training_step"]
        if model_hook is not None:
            return model_hook(batch, batch_idx)  # type: ignore[no-any-return]
        return supervised_step(self.model, self.loss, batch)

    def validation_step(self, batch: Any, batch_idx: int) -> StepResult:
        """Compute the loss and values of one validation or evaluation batch.

        Runs with the model in eval mode and without gradients. By default: the model's
        `validation_step` when it has one, else `training_step`.
        """
        model_hook = self._model_hooks["validation_step"]
        if model_hook is not None:
            return model_hook(batch, batch_idx)  # type: ignore[no-any-return]
        return self.training_step(batch, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """Return the predictions for one batch.

        By default: the model's `predict_step` when it has one, else the model's output on the
        batch's inputs, post-processed by the loss where the loss defines `postproc`.
        """
        model_hook = self._model_hooks["predict_step"]
        if model_hook is not None:
            return model_hook(batch, batch_idx)
        return prediction_step(self.model, self.loss, batch)

    # Measuring and predicting.

    def evaluate(
        self, data: Any, *, batch_size: int | None = None, model: nn.Module | None = None
    ) -> Evaluation:
        """Measure the loss and metrics on `data`, with the model in eval mode.

        Under `torchrun`, each rank measures its part of the data and every rank returns the
        values over all of it (call it on every rank).

        Args:
            data: A `kiln.Data`, a `DataLoader`, a `Dataset`, or a tuple `(X, Y)`.
            batch_size: Samples per batch for tensors, arrays and Datasets (default 32).
            model: Another model to measure the same way (its own step methods too), such as
                an average of the weights; the trainer's model stays as it is.

        Returns:
            The values, by name without prefix: `evaluation.loss`, `evaluation.accuracy`.

        Example:
            >>> import torch, kiln
            >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
            ...                        progress=False)
            >>> list(trainer.evaluate((torch.randn(8, 2), torch.randn(8, 1))).keys())
            ['loss']
        """
        batches = self._replicas.shard(as_batches(data, "data", batch_size, False), train=False)
        self._unchecked.add(VALIDATION)
        if model is None:
            return Evaluation(self._evaluate_pass(batches, emit=False))
        kept, self._model = self._model, model
        try:
            return Evaluation(self._evaluate_pass(batches, emit=False))
        finally:
            self._model = kept
            self._model_hooks = find_model_hooks(kept)

    def predict(self, inputs: Any, *, batch_size: int | None = None) -> Any:
        """Return the model's predictions, concatenated over batches, on the CPU.

        The model runs in eval mode, without gradients, under the trainer's precision;
        half-precision outputs come back as float32. A dataset's `switch_state()` is called
        before each batch.

        Args:
            inputs: The model's inputs: a tensor or array, a tuple or list of them for a model
                with several inputs, or a dict of them for keyword inputs. Or a `Data`,
                `DataLoader` or `Dataset` whose batches follow the training format (`(x, y)`:
                the targets are ignored).
            batch_size: Samples per batch for raw inputs (default 256) and Datasets.

        Returns:
            A tensor (or the structure the model returns, each part concatenated).

        Example:
            >>> import torch, kiln
            >>> trainer = kiln.Trainer(torch.nn.Linear(2, 3), device="cpu", progress=False)
            >>> trainer.predict(torch.randn(10, 2)).shape
            torch.Size([10, 3])
        """
        batches = iterate_inputs(inputs, batch_size)
        self._model_hooks = find_model_hooks(self.model)
        outputs: list[Any] = []
        self.model.eval()
        iterator = with_switch_state(batches, batches, num_batches(batches), 0)
        with torch.inference_mode(), self._stepper.autocast:
            for batch_idx, batch in enumerate(on_device(iterator, self.device)):
                if outputs:
                    outputs.append(self.predict_step(batch, batch_idx))
                else:  # the first batch: what goes wrong is explained, as in evaluate
                    self._example_inputs = example_of(batch)
                    outputs.append(run_first_prediction(self, batch))
        if not outputs:
            raise ValueError("`predict` received no samples.")
        return to_device(full_precision(concat_outputs(outputs)), torch.device("cpu"))

    # The state of a run, and files.

    def state_dict(self) -> dict[str, Any]:
        """Return the whole training state as tensors and plain data.

        It holds the model, the optimizer, the counters, the history, the callbacks' states,
        every random generator and, inside an epoch, how far the training pass got: what
        `load_state_dict` needs to continue the run exactly.

        Example:
            >>> import torch, kiln
            >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
            ...                        progress=False)
            >>> sorted(trainer.state_dict())[:4]
            ['callbacks', 'data_seed', 'format', 'history']
        """
        optimizer = self.optimizer
        in_training_pass = self.state.stage == TRAIN
        tracker = self._trackers[TRAIN]
        return {
            "format": checkpoints.FORMAT,
            "model": self.model.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "optimizer_class": None
            if optimizer is None
            else checkpoints.optimizer_class(optimizer),
            "state": self.state.state_dict(),  # with the stop reason of a run that ended
            "history": self.history.state_dict(),
            "callbacks": [
                {"name": type(callback).__name__, "state": checkpoints.callback_state(callback)}
                for callback in self.callbacks
            ],
            # What differs between ranks: the generators, and inside an epoch the position.
            "rng": get_rng_state(),
            "position": (
                {**self._position.state_dict(tracker), "data_batches": self._data_batches}
                if in_training_pass
                else None
            ),
            "data_seed": self._position.data_seed,
            "loader_seed": self._replicas.loader_seed,  # several processes: their loaders' order
            # The fp16 gradient scaler, and the gradients of an unfinished accumulation group.
            "optimizer_step": self._stepper.state_dict(optimizer),
        }

    def load_state_dict(
        self, state: dict[str, Any], *, exact: bool = True, source: str = "the given state"
    ) -> None:
        """Restore a state returned by `state_dict`.

        Args:
            state: What `state_dict` returned (or a checkpoint file's contents).
            exact: `True`: continue that run exactly, with the same callbacks (checked), every
                random generator and the position in the data order. `False`: train further
                from it in another program: the model (when `state` holds one), the optimizer
                (when `state` holds one), the counters and the history; the callbacks and the
                random generators are left as they are.
            source: How error messages name where `state` came from (a file's path).

        Raises:
            ValueError: If the state is of another format, or does not match the model, the
                optimizer or (with `exact`) the callbacks, the number of processes or, inside an
                epoch, the data. Nothing is changed then: every check comes first.
        """
        # Check everything before changing anything: a resume that fails leaves all as it was.
        checkpoints.check_format(state, source)
        if "model" in state or exact:
            checkpoints.check_model_state(self.model, state["model"], source)
        saved_optimizer = state.get("optimizer")
        if self.optimizer is not None and saved_optimizer is not None:
            saved_class = state.get("optimizer_class")
            checkpoints.check_optimizer_state(self.optimizer, saved_optimizer, saved_class, source)
        if exact:
            checkpoints.check_callbacks(self.callbacks, state["callbacks"], source)
            rng, position = checkpoints.own_rank_part(state, self.distributed, source)
            self._check_position(position, source)
        if "model" in state or exact:
            self.model.load_state_dict(state["model"])
        if self.optimizer is not None and saved_optimizer is not None:
            self.optimizer.load_state_dict(saved_optimizer)
        if exact or (self.optimizer is not None and saved_optimizer is not None):
            # The fp16 gradient scaler and a gradient group's sums, when the trainer has them.
            self._stepper.load_state_dict(state.get("optimizer_step"), self.optimizer)
        if exact:
            checkpoints.load_callback_states(self.callbacks, state["callbacks"])
        self.state.load_state_dict(state["state"])
        self.state.stop_reason = state["state"].get("stop_reason")
        self.history.load_state_dict(state["history"])
        if not exact:
            return
        set_rng_state(rng)
        self._position.restored_data_seed = state.get("data_seed")
        self._replicas.loader_seed = state.get("loader_seed")
        self._position.pending = None if position is None else {**position, "rng": rng}

    def _check_position(self, position: dict[str, Any] | None, source: str) -> None:
        """Check that a position inside an epoch fits the data `fit` was given this time."""
        saved = None if position is None else position.get("data_batches")
        now = self._data_batches
        if saved is not None and now is not None and saved != now:
            raise ValueError(
                f"{source} was saved inside an epoch of {saved} batches, but the training data "
                f"now makes {now} (another batch size, or other data): the position cannot "
                "carry over. Resume with the same data and batch size."
            )

    @property
    def options(self) -> LoopOptions:
        """How each optimizer step is made: precision, accumulation, clipping, `nonfinite`."""
        return self._stepper.options

    @property
    def replicas(self) -> Replicas:
        """The trainer's door to `torch.distributed` (in one process, every method a no-op)."""
        return self._replicas

    def test(
        self,
        data: Any,
        checkpoint: str | int | os.PathLike[str] = "best",
        *,
        name: str = "test",
        batch_size: int | None = None,
    ) -> Evaluation:
        """Evaluate a checkpoint of the experiment directory on `data`; write `{name}_log.tsv`.

        The checkpoint's weights are loaded into the model (it stays so afterwards). The log
        file holds the checkpoint's epoch row of the history and the `{name}_` values.

        Args:
            data: The test data, as for `evaluate`.
            checkpoint: `"best"` (by `monitor`), `"last"`, an epoch number whose best weights
                were saved, or the path of a weights or checkpoint file.
            name: The prefix of the values and of the log file.
            batch_size: Samples per batch for tensors, arrays and Datasets (default 32).

        Returns:
            The values measured, by name without prefix, as `evaluate` returns them.
        """
        return experiment_directory.test_checkpoint(self, data, checkpoint, name, batch_size)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a self-contained file that `kiln.load(path)` turns back into this trainer.

        It holds how to rebuild the model (see `kiln.build`), the loss, optimizer and metrics
        given by name, the weights, the optimizer state, the counters and the history; tensors
        and plain data only, written atomically.

        Returns:
            The path written.

        Example:
            >>> import tempfile, torch, kiln
            >>> trainer = kiln.Trainer(kiln.MLP(2, [8], 1), loss="mse", device="cpu",
            ...                        progress=False)
            >>> _ = trainer.fit((torch.randn(16, 2), torch.randn(16, 1)), epochs=2)
            >>> path = trainer.save(tempfile.mkdtemp() + "/model.kiln")
            >>> again = kiln.load(path)
            >>> len(again.history), type(again.model).__name__
            (2, 'MLP')
        """
        full_state = self._gather_sharded()
        if not is_main_process():  # under torchrun, rank 0 writes
            return Path(path)
        return trainer_file.save_trainer(self, path, full_state)

    def export(
        self, path: str | os.PathLike[str], *, example: Any = None, postproc: bool = True
    ) -> Path:
        """Write the model for serving (`.onnx`, `.pt2`), or its weights (`.safetensors`, `.pt`).

        The suffix picks the format. `.onnx` writes an ONNX file (`torch.onnx.export`; needs
        `pip install kiln[onnx]`), to run with `onnxruntime`; `.pt2` writes a `torch.export`
        program that `torch.export.load(path).module()` runs without kiln or the model's class.
        Both are traced on an example input, in eval mode on the CPU and without autocast,
        with the batch size left dynamic; inputs given as a dict become keyword inputs. The
        graph computes what `trainer.predict` computes by default: the model's output, then
        the loss's `postproc` where it has one (such as the sigmoid of a binary column). A
        `predict_step` of the model or of a `Trainer` subclass is not part of it.
        `.safetensors` and `.pt` write the weights alone (see `kiln.saving.export`).

        Args:
            path: The file to write (missing directories are created). It is written whole or
                not at all: a failed export leaves a previous file as it was.
            example: An input for the model, as `predict` takes it: a tensor, a tuple or list
                of tensors, or a dict of them, batch first. By default, the first rows of the
                inputs of the last data the trainer ran on (`fit`, `evaluate`, `predict`).
            postproc: Whether the graph ends with the loss's `postproc`; `False` exports the
                model's raw output (logits).

        Returns:
            The path written.

        Raises:
            ValueError: For an unknown suffix; for `.onnx` or `.pt2` without an example (the
                trainer has run on no data and none was given), for a sharded model, or for a
                model the tracer cannot follow: the message names the module, the line and
                the cause (data-dependent control flow, a fixed batch size, ...).

        Example:
            >>> import tempfile, torch, kiln
            >>> trainer = kiln.Trainer(kiln.MLP(2, [8], 1), loss="mse", device="cpu",
            ...                        progress=False)
            >>> trainer.export(tempfile.mkdtemp() + "/weights.safetensors").suffix
            '.safetensors'
            >>> _ = trainer.fit((torch.randn(16, 2), torch.randn(16, 1)), epochs=1)
            >>> program = torch.export.load(trainer.export(tempfile.mkdtemp() + "/net.pt2"))
            >>> program.module()(torch.randn(5, 2)).shape  # any batch size
            torch.Size([5, 1])
        """
        serving = Path(path).suffix.lower() in SERVING_SUFFIXES
        if serving and self._replicas.sharded:
            raise ValueError(
                f"Cannot export a sharded model to {Path(path).name}: export its weights "
                "(`trainer.export('weights.safetensors')`), load them into the model in one "
                "process (`kiln.load`), and export that."
            )
        full_state = None if serving else self._gather_sharded()
        if not is_main_process():
            return Path(path)
        if not serving:
            weights = None if full_state is None else full_state[0]
            return export_weights(self.model, path, weights)
        if example is None:
            example = self._example_inputs
        if example is None:
            raise ValueError(
                f"Cannot export to {Path(path).name}: there is no example input to trace the "
                "model on, as the trainer has run on no data. Pass one, batch first, as "
                "`trainer.export(path, example=torch.randn(2, n_features))` (a tuple or a "
                "dict for several inputs)."
            )
        post = self.loss.postproc if postproc and self.loss is not None else None
        return export_program(self.model, path, example, post)

    def _gather_sharded(self) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """The whole model and optimizer states of a sharded model (every rank must call)."""
        if not self._replicas.sharded:
            return None
        from kiln.distributed.fsdp import full_state  # a slow import

        return full_state(self.model, self.optimizer)

    # Tools around training: schedules, the LR finder, a summary.

    @property
    def schedules(self) -> LRScheduler:
        """The trainer's learning-rate schedule: its `kiln.callbacks.LRScheduler`.

        `trainer.schedules.set(kiln.optim.WarmupCosine(...))` replaces the curves, `.add(...)`
        chains one more, `.clear()` removes them, and `.plot(...)` draws the planned curve.
        Reading it changes nothing: a trainer without an `LRScheduler` callback returns a new
        one, which joins the callbacks (first) when `fit` starts, if a schedule was set on it.

        Example:
            >>> import torch, kiln
            >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", optimizer="sgd",
            ...                        lr=0.1, device="cpu", progress=False)
            >>> trainer.schedules.set(kiln.optim.LinearSchedule(lr1=0.1, lr2=0.01, epochs=3))
            >>> history = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), epochs=4)
            >>> [round(lr, 3) for lr in history.lr]
            [0.1, 0.07, 0.04, 0.01]
        """
        for callback in self.callbacks:
            if isinstance(callback, LRScheduler):
                return callback
        if self._unattached_schedule is None:
            self._unattached_schedule = LRScheduler()
        return self._unattached_schedule

    def _attach_schedule(self) -> None:
        """Add the schedule set through `schedules` to the callbacks, if one was set."""
        scheduler, self._unattached_schedule = self._unattached_schedule, None
        attached = any(isinstance(callback, LRScheduler) for callback in self.callbacks)
        if scheduler is not None and not scheduler.empty and not attached:
            self._added.append(scheduler)
            # First, so that a StepCheckpoint (put last) saves the schedule of the same step.
            self.callbacks = [scheduler, *self.callbacks]

    def lr_find(self, train: Any, **options: Any) -> LRFinderResult:
        """Run a learning-rate range test on `train`; the trainer is left exactly as it was.

        The options (`start_lr`, `end_lr`, `num_steps`, `mode`, `smooth`, `diverge`,
        `batch_size`, `callbacks`) are those of `kiln.lr_find`.

        Example:
            >>> import torch, kiln
            >>> X, Y = torch.randn(64, 2), torch.randn(64, 1)
            >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", optimizer="sgd",
            ...                        device="cpu", progress=False)
            >>> result = trainer.lr_find((X, Y), num_steps=20)
            >>> result.suggestion < 10, trainer.state.step
            (True, 0)
        """
        from kiln.tools.lr_finder import lr_find  # tools sit above the loop

        return lr_find(self, train, **options)

    @contextlib.contextmanager
    def trial(self, callbacks: Iterable[Any]) -> Iterator[None]:
        """Run something on this trainer with a fresh run's state, then put everything back.

        Inside, the trainer has fresh counters, history and data position, no directory, only
        `callbacks`, no metrics, and a NaN or infinite loss raises. On the way out, also after
        an error, every attribute of the trainer is as it was. The model's weights and the
        optimizer's state are the caller's to keep or restore (the LR finder restores them).

        Example:
            >>> import torch, kiln
            >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
            ...                        progress=False)
            >>> with trainer.trial(callbacks=[]):
            ...     _ = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), epochs=3)
            >>> trainer.state.epoch, len(trainer.history)
            (0, 0)
        """
        attributes = dict(vars(self))  # fit rebinds some (the set of unchecked passes, ...)
        # Fresh objects rather than saved copies: the originals are never touched.
        self.state, self.history, self._position = TrainState(), History(), PassPosition()
        self._trackers = {name: PassTracker([]) for name in self._trackers}
        self._set_callbacks(callbacks)
        self._dir = None  # no directory: nothing written, no last.ckpt to resume from
        options = dataclasses.replace(self._stepper.options, nonfinite="raise")
        stepper = OptimizerStepper(options, self.optimizer, self.device)
        stepper.copy_scaler(self._stepper)
        self._stepper = stepper
        try:
            yield
        finally:
            for name in set(vars(self)) - set(attributes):
                delattr(self, name)
            vars(self).update(attributes)

    def summary(
        self,
        input_size: Sequence[int] | Sequence[Sequence[int]],
        batch_size: int = 1,
        dtypes: Any = None,
    ) -> ModelSummary:
        """Describe the model's layers: input and output shapes, parameters, multiply-adds.

        `input_size` excludes the batch dimension (a list of sizes for a model with several
        inputs); `print` the result for the table.

        Example:
            >>> import kiln
            >>> trainer = kiln.Trainer(kiln.MLP(4, [8], 2), device="cpu", progress=False)
            >>> trainer.summary((4,)).total_params
            58
        """
        from kiln.tools.summary import summary  # tools sit above the loop

        return summary(
            self.model, input_size, batch_size=batch_size, device=self.device, dtypes=dtypes
        )

    def __repr__(self) -> str:
        return f"Trainer({type(self.model).__name__}, loss={self.loss}, device={self.device})"


def load(
    path: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    builder: Callable[..., nn.Module] | None = None,
    classes: Iterable[type] = (),
    **overrides: Any,
) -> Trainer:
    """Return a `Trainer` rebuilt from a file, ready to `predict`, `evaluate` or `fit` further.

    The model comes from `model=` when given, else from `builder=` called with the recorded
    arguments, else from the recorded class (which must be a `torch.nn.Module` subclass; a
    builder function is never called from a name in the file).

    Loading runs no code from the file and imports nothing because of it: a class the file
    names (the model's, a custom optimizer's) is found among the modules the program has
    imported already, or in `classes=`; otherwise the error says how to allow it. What is
    passed (`model=`, `optimizer=`, ...) is used as given: its record in the file is not
    looked at. The model is first built on the meta device, without memory, and compared with
    the weights: a small file cannot make it allocate a model its weights do not fill.

    A file from `trainer.save`
    also brings back the loss, optimizer and metrics recorded by name, the optimizer's state,
    the counters and the history, so `fit` continues the epoch count, and the loop options
    (`precision`, `accumulate`, `clip_norm`, `clip_value`, `nonfinite`), so each optimizer step
    is made as before. Other files give weights only: a run's `last.ckpt` (with its optimizer
    state, counters and history), a plain `state_dict` (`.pt`) or a `.safetensors` export.

    Every other keyword is one of `Trainer`'s, and wins over what the file recorded, `None`
    included: `clip_norm=None` turns recorded clipping off, and clipping is one choice
    (passing `clip_norm` or `clip_value` replaces both recorded values). A recorded `"fp16"`
    loaded off CUDA, where it cannot run, becomes `"32"` with a warning. A given optimizer gets
    the saved state when it is of the saved class over parameter groups of the same sizes.
    Callback states and random generators are not restored: `load` continues training, not
    the same run (`fit(resume=True)` does that).

    Args:
        path: The file.
        model: A model to load the weights into, built as the saved one was.
        builder: The function that built the model, called with the recorded arguments.
        classes: Classes the file may name besides those already imported, such as the model's
            class when its module is not imported (`classes=[MyNet]`); matched by import path,
            or by name for a file saved by a script (`__main__`).
        **overrides: `Trainer` keywords (`loss`, `optimizer`, `metrics`, `callbacks`, `device`,
            `dir`, `progress`, the loop options, ...) for the new trainer.

    Raises:
        TypeError: For a keyword that `Trainer` does not take, or `classes` that are not
            classes.
        ValueError: If the model cannot be rebuilt (a class neither imported nor in
            `classes`), its weights come from another architecture (the message names the keys
            and shapes), something not recorded by name is not given, or a recorded loop option
            is unknown (and not passed); each message names the file and says what to pass.
        CheckpointError: If the file is missing, a directory, damaged (empty, truncated, bit
            flips, a part of the wrong kind) or not one kiln reads, holds anything but tensors
            and plain data, or declares more values than it holds; the message names the file
            and what is wrong. It is an `OSError` and a `ValueError`.

    Example:
        >>> import tempfile, torch, kiln
        >>> X, Y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> trainer = kiln.Trainer(kiln.MLP(4, [8], 3), loss="cross_entropy", device="cpu",
        ...                        progress=False, accumulate=2, clip_norm=1.0)
        >>> _ = trainer.fit((X, Y), epochs=2)
        >>> path = trainer.save(tempfile.mkdtemp() + "/run.kiln")
        >>> loaded = kiln.load(path, device="cpu", progress=False)
        >>> torch.equal(loaded.predict(X), trainer.predict(X))
        True
        >>> len(loaded.fit((X, Y), epochs=1)), loaded.options.accumulate
        (3, 2)
        >>> kiln.load(path, device="cpu", progress=False, clip_norm=None).options.clip_norm
    """
    known = set(inspect.signature(Trainer.__init__).parameters) - {"self", "model"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(
            f"kiln.load got the keywords {', '.join(unknown)}, which Trainer does not take; it "
            f"takes model=, builder=, classes= and Trainer's keywords: "
            f"{', '.join(sorted(known))}."
        )
    plan = trainer_file.read_for_load(path, model, builder, overrides, classes)
    trainer = Trainer(plan.model, **plan.arguments)
    if plan.state is not None:
        trainer_file.restore_run(trainer, plan.state, plan.saved_optimizer, plan.source)
    return trainer
