"""From a batch's loss to an optimizer step: checks, accumulation, scaling, clipping.

What lives here: `OptimizerStepper`, which the training loop calls twice a batch: `backward`
(check the loss, divide it for accumulation, scale it for fp16, run backward) and, at the last
batch of a group, `step` (unscale, the `before_optimizer_step` event, clip, step, zero the
gradients); and its `state_dict` (the gradient scaler, gradients of an unfinished group), which
checkpoints hold. What does not: forward and loss (`step_methods.py`), autocast and compilation
(`precision.py`), or the loop (`trainer.py`).

The order within one optimizer step, for callbacks::

    each batch of a group:  loss check -> loss / group size -> scaler.scale -> backward
    its last batch:         scaler.unscale_ -> BEFORE_OPTIMIZER_STEP -> clip -> step -> zero_grad

so `before_optimizer_step` sees the true gradients (unscaled, summed over the group, not yet
clipped) and may change them.

Gradient accumulation: a group is `accumulate` consecutive batches of an epoch (the count
starts again at each epoch); the last group of an epoch may be shorter. Each batch's loss is
divided by its group's real size (in batches), known in advance when the data has a length; for
data without one, the last group's gradients are rescaled before its step. Every batch of a
group then weighs the same, as in one large batch made of equal-size parts.

Non-finite losses, and what checking them costs. Deciding before the optimizer step needs the
loss's value on the host. On the CPU that is a plain read, and every batch's loss is checked
before its backward. On an accelerator a read per batch would make the host wait for the device
at every batch, so with `nonfinite="raise"` the losses stay on the device and are checked where
kiln reads them anyway: at the end of the epoch and before any checkpoint is written. The error
then comes at the end of the epoch (naming the first bad batch), the weights in memory are not
usable (with fp16, whose gradient scaler skips steps with non-finite gradients, they stay
finite), and no checkpoint is written with them. `nonfinite="skip"` must decide batch by batch,
so it reads every loss: on an accelerator, that wait is its cost.

Several processes (`torchrun`; `kiln.distributed.Replicas`). Each batch's forward and backward
run inside `gradient_sync(batch_idx)`: with accumulation, the batches of a group before its last
keep their gradients on each rank, and the last one's backward reduces the group's sum once
(not once a batch). A group whose last batch reduced nothing (skipped, or the end of data
without a length) is averaged over the ranks before its step. With `nonfinite="skip"` the
ranks agree on each batch (one all-reduce of a flag): a loss that is not finite on one rank
skips the batch on all, so their weights and step counts stay equal.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kiln.data.batch import slice_batch
from kiln.loop.buffer_guard import BufferGuard
from kiln.loop.precision import autocast, grad_scaler
from kiln.loop.step_methods import StepOutput
from kiln.options import LoopOptions

if TYPE_CHECKING:
    from kiln.distributed.replicas import Replicas
    from kiln.loop.tracking import PassTracker
    from kiln.state import TrainState

#: The context of a batch whose backward reduces its gradients as usual (reusable).
_AS_USUAL: AbstractContextManager[None] = nullcontext()


def nonfinite_error(
    value: float, epoch: int, batch_idx: int, step: int | None = None
) -> FloatingPointError:
    """Return the error that stops a run whose training loss is NaN or infinite.

    Args:
        value: The loss.
        epoch: The epoch, 1-based as logged.
        batch_idx: The batch's index in the epoch.
        step: The optimizer steps done before the batch; None when the loss was found later
            (at the end of the epoch, or before a save).

    Example:
        >>> str(nonfinite_error(float("nan"), epoch=3, batch_idx=5, step=41))[:52]
        'The training loss is nan at epoch 3, batch 5 (after '
    """
    if step is None:
        what = (
            f"The training loss was {value} at epoch {epoch}, batch {batch_idx}, found at the "
            "end of the epoch or before a save: on this device a check before every batch would "
            "make the host wait for the device. The weights in memory are not usable; no "
            "checkpoint was written with them."
        )
    else:
        what = (
            f"The training loss is {value} at epoch {epoch}, batch {batch_idx} (after {step} "
            "optimizer steps). The run stopped before the optimizer step, so the weights and "
            f"buffers (such as BatchNorm's statistics) are still those after step {step}."
        )
    return FloatingPointError(
        f"{what} Lower the learning rate, clip the gradients (`clip_norm=1.0`), check the data "
        "for NaN or infinite values, or pass `nonfinite='skip'` to leave such batches out."
    )


class OptimizerStepper:
    """Backward and optimizer steps, by the trainer's `LoopOptions`.

    Args:
        options: The loop options (precision, accumulation, clipping, non-finite losses).
        optimizer: The optimizer, or None for a trainer that does not train. Each pass may
            give another (`begin_pass`): a trainer whose optimizer was replaced (wrapped in
            Lookahead, say) steps the new one.
        device: The training device: it decides autocast and how losses are checked.
        replicas: The trainer's processes under `torchrun`, or None (one process, or a
            stepper of its own, such as the LR finder's): when and how gradients are reduced
            over the ranks, and whether a batch is skipped on every rank.

    Raises:
        ValueError: For a precision the device cannot run (`"fp16"` off CUDA).

    Example:
        >>> import torch
        >>> from kiln import TrainState
        >>> model = torch.nn.Linear(2, 1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> stepper = OptimizerStepper(LoopOptions(), optimizer, torch.device("cpu"))
        >>> stepper.begin_pass(optimizer, num_batches=1, first=0)
        >>> _ = stepper.backward(StepOutput(model(torch.ones(1, 2)).sum(), 1), TrainState())
        >>> stepper.ends_group(0), stepper.step(None)
        (True, True)
    """

    def __init__(
        self,
        options: LoopOptions,
        optimizer: torch.optim.Optimizer | None,
        device: torch.device,
        replicas: Replicas | None = None,
    ) -> None:
        self.options, self.optimizer = options, optimizer
        self.autocast = autocast(options.precision, device)
        self.scaler = grad_scaler(options.precision, device)
        #: Whether each batch's loss is read before its backward (see the module's docstring).
        self.check_each_batch = options.nonfinite == "skip" or device.type == "cpu"
        self.skipped = 0  # batches skipped in the current training pass
        self._group = options.accumulate
        self._tail_start: int | None = None  # first batch of a shorter last group
        self._tail_size = 0
        self._num_batches: int | None = None
        self._in_group = 0  # batches of the current group done so far
        self._has_grads = False  # a batch of the current group ran backward
        self._tracker: PassTracker | None = None
        self._epoch = 0  # the current training pass's epoch, 1-based
        self._params: list[Tensor] = []
        self._replicas = replicas if replicas is not None and replicas.enabled else None
        #: Several ranks with `nonfinite="skip"`: they agree on each batch's skip.
        self._agree = self._replicas is not None and options.nonfinite == "skip"
        #: The model's buffers, kept before each batch's forward (see `keep_buffers`).
        self.guard: BufferGuard | None = None
        self._keeps = False  # this pass's groups keep gradients on each rank until their last
        self._unreduced = False  # the group's gradients hold batches not reduced over the ranks

    @staticmethod
    def _parameters(optimizer: torch.optim.Optimizer | None) -> list[Tensor]:
        groups = [] if optimizer is None else optimizer.param_groups
        return [param for group in groups for param in group["params"]]

    def begin_pass(
        self,
        optimizer: torch.optim.Optimizer | None,
        num_batches: int | None,
        first: int,
        tracker: PassTracker | None = None,
        epoch: int = 0,
        model: nn.Module | None = None,
    ) -> None:
        """Start a training pass of `num_batches` (None: unknown) from batch `first` (resumed).

        `tracker` and `epoch` (the pass's losses, and its epoch counting from 0) are kept to
        name the first bad batch when losses are checked after the fact. The buffers of
        `model` are guarded when each batch's loss is checked: see `keep_buffers`.
        """
        guarded = model is not None and self.check_each_batch
        self.guard = BufferGuard(model) if guarded and model is not None else None
        group = self._group
        self._num_batches, self._tracker, self._epoch = num_batches, tracker, epoch + 1
        self.optimizer, self._params = optimizer, self._parameters(optimizer)
        self._in_group = first % group
        tail = 0 if num_batches is None else num_batches % group
        self._tail_start = None if tail == 0 or num_batches is None else num_batches - tail
        self._tail_size = tail
        replicas = self._replicas
        self._keeps = (
            replicas is not None
            and group > 1
            and replicas.keeps_gradients(num_batches is not None, self.options.nonfinite == "skip")
        )
        if first == 0:
            self.skipped = 0
            self._has_grads = self._unreduced = False

    def keep_buffers(self) -> Callable[[], None] | None:
        """The call that keeps the buffers before each forward, or None when none are guarded.

        A batch refused or skipped for its loss then leaves the buffers as they were: a NaN
        input does not poison BatchNorm's running statistics.
        """
        return self.guard.keep if self.guard else None

    def gradient_sync(self, batch_idx: int) -> AbstractContextManager[Any]:
        """The context of batch `batch_idx`'s forward and backward.

        Under `torchrun` with `accumulate`, a batch before its group's last keeps its gradients
        on each rank (DDP's `no_sync`); otherwise, and in one process, it does nothing.
        """
        if not self._keeps or self.ends_group(batch_idx):
            return _AS_USUAL
        return self._replicas.no_sync()  # type: ignore[union-attr]  # _keeps

    def backward(self, output: StepOutput, state: TrainState) -> StepOutput:
        """Check the batch's loss, then run backward; return the output to track.

        A batch skipped for a non-finite loss returns an output of size 0 and loss 0, which
        leaves the epoch's means and metrics as they were but keeps the count of batches done.

        Raises:
            FloatingPointError: With `nonfinite="raise"`, for a NaN or infinite loss.
        """
        loss: Tensor = output.loss  # type: ignore[assignment]  # checked on the first batch
        self._in_group += 1
        if self.check_each_batch:
            value = loss.item()
            finite = math.isfinite(value)
            if self._agree:  # skipped on every rank if its loss is not finite on one
                finite = self._replicas.all_finite(finite)  # type: ignore[union-attr]  # _agree
            if not finite:
                if self.guard is not None:
                    self.guard.restore()  # the forward's changes to BatchNorm statistics, undone
                if self.options.nonfinite == "raise":
                    raise nonfinite_error(value, state.epoch + 1, state.batch_idx, state.step)
                self.skipped += 1
                state.skipped_batches += 1
                return skipped(output, loss)
        if self._group > 1:
            batch = state.batch_idx
            tail = self._tail_start is not None and batch >= self._tail_start
            loss = loss / (self._tail_size if tail else self._group)
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()  # type: ignore[no-untyped-call]
        self._has_grads = True
        if self._keeps:  # a group's last backward reduces what the others kept
            self._unreduced = not self.ends_group(state.batch_idx)
        return output

    def ends_group(self, batch_idx: int) -> bool:
        """Whether batch `batch_idx` is the last of its accumulation group."""
        return (batch_idx + 1) % self._group == 0 or batch_idx + 1 == self._num_batches

    def step(self, before_step: Callable[[], None] | None) -> bool:
        """End the group: unscale, `before_step()`, clip, step, zero the gradients.

        Returns:
            Whether an optimizer step was taken (not when every batch of the group was skipped).
        """
        optimizer, scaler, options = self.optimizer, self.scaler, self.options
        self._in_group = 0
        unreduced, self._unreduced = self._unreduced, False
        if optimizer is None or not self._has_grads:
            return False
        if unreduced:  # its last batch reduced nothing: skipped, or data without a length
            self._replicas.average_gradients(self._params)  # type: ignore[union-attr]
        if scaler is not None:
            scaler.unscale_(optimizer)
        if before_step is not None:
            before_step()
        if options.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._params, options.clip_norm)
        elif options.clip_value is not None:
            torch.nn.utils.clip_grad_value_(self._params, options.clip_value)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self._has_grads = False
        return True

    def finish_pass(self, before_step: Callable[[], None] | None) -> bool:
        """Step an unfinished last group of data without a length; return whether it stepped.

        Its batches were divided by the full group size: the gradients are rescaled to the
        group's real size first.
        """
        if self._in_group == 0 or not self._has_grads:
            self._in_group = 0
            return False
        grads = [p.grad for p in self._params if p.grad is not None]
        torch._foreach_mul_(grads, self._group / self._in_group)
        return self.step(before_step)

    def end_pass(self, values: dict[str, float], state: TrainState) -> dict[str, float]:
        """After a training pass: check the losses left on the device; return values to log.

        With `nonfinite="skip"`, the epoch logs `skipped_batches` (this epoch's count), and a
        warning says how many were skipped.

        Raises:
            FloatingPointError: With `nonfinite="raise"`, checked here, for a non-finite loss.
        """
        loss = values.get("loss")
        if not self.check_each_batch and loss is not None and not math.isfinite(loss):
            self._raise_first_nonfinite()
        if self.options.nonfinite != "skip":
            return {}
        if self.skipped:
            warnings.warn(
                f"{self.skipped} batch(es) of epoch {state.epoch} were skipped: their loss was "
                "NaN or infinite (`nonfinite='skip'`). Lower the learning rate, clip the "
                "gradients, or check the data.",
                RuntimeWarning,
                stacklevel=3,
            )
        return {"skipped_batches": float(self.skipped)}

    def check_validation(self, values: dict[str, float], state: TrainState) -> None:
        """Stop a run whose validation loss is NaN or infinite (with `nonfinite="raise"`).

        Raises:
            FloatingPointError: Naming the epoch, so the weights that produced it can be found.
        """
        loss = values.get("loss")
        if self.options.nonfinite == "raise" and loss is not None and not math.isfinite(loss):
            raise FloatingPointError(
                f"The validation loss is {loss} after epoch {state.epoch}, though the training "
                "losses were finite. Check the validation data for NaN or infinite values, or "
                "pass `nonfinite='skip'` to train on."
            )

    def _raise_first_nonfinite(self) -> None:
        if self._tracker is None or not self._tracker.batches:
            return
        for index, value in enumerate(self._tracker.batch_losses()):
            if not math.isfinite(value):
                raise nonfinite_error(value, self._epoch, index)

    def state_dict(self, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
        """Return the scaler's state and the gradients of an unfinished group (else None).

        Raises:
            FloatingPointError: If losses left on the device were not finite: no checkpoint is
                written with the weights they produced.
            RuntimeError: Under `torchrun`, inside an accumulation group whose gradients are
                still each rank's own (rank 0 writes the checkpoint: the others' would be lost).
        """
        if not self.check_each_batch:
            self._raise_first_nonfinite()
        if self._unreduced:
            raise RuntimeError(
                "A checkpoint was asked for inside a gradient accumulation group, under torchrun: "
                "until the group's last batch each rank holds its own gradients, and the "
                "checkpoint would keep only one rank's. Save at the end of a group (after an "
                "optimizer step, as `StepCheckpoint(every_n_steps=...)` and the end of an epoch "
                "do)."
            )
        pending = self._has_grads and self._in_group > 0
        return {
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "grads": [p.grad for p in self._parameters(optimizer or self.optimizer)]
            if pending
            else None,
            "skipped": self.skipped,
        }

    def load_state_dict(
        self, state: dict[str, Any] | None, optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """Restore what `state_dict` returned (None: a checkpoint from before these options)."""
        state = state or {}
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        grads = state.get("grads")
        params = self._parameters(optimizer or self.optimizer)
        if grads is None:
            grads = [None] * len(params)
        elif len(grads) != len(params):
            raise ValueError(
                f"The checkpoint holds the gradients of {len(grads)} parameters (an unfinished "
                f"accumulation group), but the optimizer has {len(params)}. Resume with the same "
                "model and optimizer."
            )
        for param, grad in zip(params, grads, strict=True):
            param.grad = None if grad is None else grad.to(param.device)
        self._has_grads = any(grad is not None for grad in grads)
        self._unreduced = False  # saved reduced: the same on every rank
        self.skipped = int(state.get("skipped", 0))

    def copy_scaler(self, other: OptimizerStepper) -> None:
        """Take over the fp16 gradient scaler's state of `other` (its scale and growth count)."""
        if self.scaler is not None and other.scaler is not None:
            self.scaler.load_state_dict(other.scaler.state_dict())


def skipped(output: StepOutput, loss: Tensor) -> StepOutput:
    """Return what a batch skipped for its loss counts for: nothing, but one batch done.

    Its loss is 0 with size 0, and metrics receive none of its samples.
    """
    model_output, target = output.output, output.target
    return StepOutput(
        torch.zeros((), dtype=loss.dtype, device=loss.device),
        0,
        None if model_output is None else slice_batch(model_output, 0, 0),
        None if target is None else slice_batch(target, 0, 0),
    )
