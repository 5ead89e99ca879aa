"""What the trainer does differently when several processes train together, in one object.

`Replicas` is the trainer's only door to `torch.distributed`. In one process every method
returns its input or does nothing, so the loop reads the same either way. Under `torchrun`:

- each training batch's computation runs inside `DistributedDataParallel`'s forward
  (`StepForward`), so DDP sees all of it whoever computes it: the default supervised step
  method, a model's own `training_step` (which calls `self(x)`, bypassing a plain DDP wrapper:
  the well-known trap), or a `Trainer` subclass's. Validation, evaluation and prediction use
  the model itself;
- the data is sharded per rank (`sharding.py`), with the shuffling seed agreed from rank 0;
- with gradient accumulation, the gradients are reduced over the ranks once per optimizer
  step: the batches of a group before its last run (forward and backward) inside DDP's
  `no_sync()` (FSDP: `set_requires_gradient_sync(False)`);
- with `nonfinite="skip"`, a batch whose loss is NaN or infinite on any rank is skipped on
  every rank (one all-reduce of a flag a batch, in that mode only), so the ranks stay equal;
- at the end of each training pass, rank 0's buffers (BatchNorm's running statistics) are
  copied to every rank (DDP), so validation and rank 0's checkpoint see one model;
- each pass's losses, logged values and metrics are summed over the ranks before they are
  computed, so every rank logs the same values, those of one process over all the data;
- a stop asked for on any rank (early stopping, a stop file, a callback) takes effect on every
  rank at the end of the same epoch; inside an epoch only the step and sample budgets stop the
  loop, as their counters are the same on every rank (no per-step exchange);
- callbacks marked `main_process_only` (progress, logs, plots, loggers, the stop file) run on
  rank 0 only.

What lives here: `Replicas` and `StepForward`. What does not: the process group
(`context.py`), the shards (`sharding.py`), and checkpoints (`kiln.checkpoint.run`, which asks
for each rank's random state and writes from rank 0).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from kiln.distributed import collectives
from kiln.distributed.context import DistributedContext, release_at_exit
from kiln.distributed.sharding import shard

if TYPE_CHECKING:
    from kiln.loop.tracking import PassTracker
    from kiln.trainer import Trainer

#: The ways the model can be spread over the ranks.
STRATEGIES = ("ddp", "fsdp")


class StepForward(nn.Module):
    """Run a whole step method as the forward of a module that holds the model, for DDP.

    DDP prepares its gradient reduction in its own forward; a step method that calls the model
    directly (`self(x)` in a model's `training_step`) would bypass it. Wrapping the method
    instead keeps DDP in charge of every parameter, however the method uses the model.

    Example:
        >>> import torch
        >>> forward = StepForward(torch.nn.Linear(2, 1))
        >>> forward(lambda x: x + 1, torch.zeros(1))
        tensor([1.])
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, method: Callable[..., Any], *args: Any) -> Any:
        """Return `method(*args)`."""
        return method(*args)


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """Return `DistributedDataParallel(StepForward(model))` for `context`'s device.

    Call it with `ddp(method, batch, batch_idx)`: DDP then reduces the gradients of whatever
    `method` computes with `model`. Rank 0's weights are copied to every rank here.

    Example:
        >>> import torch
        >>> from kiln.distributed.context import setup
        >>> context = setup("cpu")
        >>> wrap_model(torch.nn.Linear(2, 1), context) if context.enabled else None
    """
    from torch.nn.parallel import DistributedDataParallel

    device = context.device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(StepForward(model), device_ids=ids)


def _release_wrapper(replicas: weakref.ref[Replicas]) -> None:
    """Drop the DDP wrapper of `replicas`, if it still lives (its reducer holds the group)."""
    alive = replicas()
    if alive is not None:
        alive._ddp = alive._ddp_of = None


class Replicas:
    """The trainer's side of a run on several processes; in one process, pass-through.

    Args:
        context: Where this process stands (`kiln.distributed.setup()`).
        strategy: `"ddp"`: every rank holds the whole model, gradients are averaged;
            `"fsdp"`: the parameters are sharded over the ranks (FSDP2's `fully_shard`), and
            checkpoints go through `torch.distributed.checkpoint` (`last.dcp/`).

    Example:
        >>> import torch
        >>> from kiln.distributed.context import DistributedContext, release_at_exit
        >>> replicas = Replicas(DistributedContext(0, 1, 0, torch.device("cpu"), None))
        >>> method = lambda batch, index: batch
        >>> replicas.training_step(method) is method, replicas.shard([1, 2], train=True)
        (True, [1, 2])
    """

    def __init__(self, context: DistributedContext, strategy: str = "ddp") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(
                f"`strategy` must be one of {list(STRATEGIES)}; received {strategy!r}."
            )
        self.context, self.strategy = context, strategy
        self.enabled = context.enabled
        #: Whether the model is sharded over the ranks (FSDP), its checkpoints through DCP.
        self.sharded = self.enabled and strategy == "fsdp"
        self._ddp: nn.Module | None = None
        self._ddp_of: nn.Module | None = None
        self._sharded_model: nn.Module | None = None  # fsdp: the model, to switch its syncing
        #: The seed of the order of shuffled DataLoaders, agreed by the ranks and checkpointed.
        self.loader_seed: int | None = None

    def active(self, callbacks: Iterable[Any]) -> list[Any]:
        """The callbacks that run in this process.

        On ranks other than 0, those marked `main_process_only` (they only print or write
        files) are left out.
        """
        if self.context.is_main:
            return list(callbacks)
        return [cb for cb in callbacks if not getattr(cb, "main_process_only", False)]

    def place(self, model: nn.Module, optimizer: Any) -> nn.Module:
        """Shard `model` over the ranks for `strategy="fsdp"` (before its optimizer is built)."""
        if not self.sharded:
            return model
        if isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                "`strategy='fsdp'` replaces the model's parameters with shards, so the optimizer "
                "must be built after it: pass its name or a callable `fn(params)`, not an "
                f"optimizer instance ({type(optimizer).__name__})."
            )
        from kiln.distributed.fsdp import shard_model  # about 1 s to import

        shard_model(model)
        return model

    def prepare(self, model: nn.Module) -> None:
        """Wrap `model` for training (once per model; copies rank 0's weights everywhere)."""
        if self.sharded:
            self._sharded_model = model
        elif self.enabled and self.strategy == "ddp" and self._ddp_of is not model:
            if self._ddp is None:  # the first wrapper: drop it at exit, before the group goes
                release_at_exit(partial(_release_wrapper, weakref.ref(self)))
            self._ddp, self._ddp_of = wrap_model(model, self.context), model

    def no_sync(self) -> AbstractContextManager[Any]:
        """The context of a batch's forward and backward that keeps its gradients on this rank.

        The next backward outside it reduces the gradients over the ranks, those accumulated
        inside included. DDP decides in its forward whether the next backward reduces, so the
        forward must run inside the context too. In one process, and before `prepare`, it does
        nothing.

        Example:
            >>> import torch
            >>> from kiln.distributed.context import DistributedContext
            >>> replicas = Replicas(DistributedContext(0, 1, 0, torch.device("cpu"), None))
            >>> with replicas.no_sync():  # one process: nothing to reduce
            ...     pass
        """
        if self._ddp is not None:
            ddp: Any = self._ddp  # DistributedDataParallel
            context: AbstractContextManager[Any] = ddp.no_sync()
            return context
        if self._sharded_model is not None:
            from kiln.distributed.fsdp import no_gradient_sync  # imported already

            return no_gradient_sync(self._sharded_model)
        return nullcontext()

    def keeps_gradients(self, sized: bool, skips: bool) -> bool:
        """Whether the batches of a group before its last may keep their gradients on each rank.

        Under DDP, always: a group whose last batch reduces nothing (skipped, or the end of data
        without a length) is averaged by `average_gradients`. FSDP keeps such gradients inside
        its own state, out of that reach, so only when the group's last batch surely runs
        backward: the data has a length (`sized`) and no batch is skipped (`skips`). Otherwise
        every batch's backward reduces, as without accumulation.

        Example:
            >>> import torch
            >>> from kiln.distributed.context import DistributedContext
            >>> Replicas(DistributedContext(0, 1, 0, torch.device("cpu"), None)).keeps_gradients(
            ...     sized=True, skips=False)
            False
        """
        if not self.enabled:
            return False
        return not self.sharded or (sized and not skips)

    def average_gradients(self, params: Iterable[Tensor]) -> None:
        """Average the gradients of `params` over the ranks now (DDP; in one process: nothing).

        For a group whose gradients were kept on each rank and whose last batch reduced none:
        it was skipped for a non-finite loss, or ended data without a length, where the group's
        end is known only after its last batch.
        """
        grads = [param.grad for param in params if param.grad is not None]
        if self._ddp is None or not grads:
            return
        flat = torch.cat([grad.reshape(-1) for grad in grads])  # one exchange for all of them
        dist.all_reduce(flat)
        flat /= self.context.world_size
        parts = torch.split(flat, [grad.numel() for grad in grads])
        for grad, mean in zip(grads, parts, strict=True):
            grad.copy_(mean.view_as(grad))

    def align_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm's running statistics, say) to every rank (DDP).

        DDP copies them at the start of each training forward, but the last batch of a pass
        updates each rank's with its own data; validation, which runs on the model itself,
        would then mix slightly different models, and rank 0 would checkpoint one that no
        logged value measured. Called at the end of each training pass, this does what DDP
        would do at the next forward: one broadcast a dtype, of the buffers flattened together.
        In one process it does nothing; under FSDP too, on purpose: FSDP copies no buffers
        between ranks itself, and kiln leaves its runs as FSDP makes them.

        Example:
            >>> import torch
            >>> from kiln.distributed.context import DistributedContext
            >>> replicas = Replicas(DistributedContext(0, 1, 0, torch.device("cpu"), None))
            >>> norm = torch.nn.BatchNorm1d(2)
            >>> replicas.align_buffers(norm)  # one process: nothing to align
            >>> norm.running_mean
            tensor([0., 0.])
        """
        if self._ddp is None:
            return
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for buffer in model.buffers():  # floating and integer (`num_batches_tracked`) alike
            by_dtype.setdefault(buffer.dtype, []).append(buffer)
        for buffers in by_dtype.values():
            flat = torch.cat([buffer.detach().reshape(-1) for buffer in buffers])
            dist.broadcast(flat, src=0)
            parts = torch.split(flat, [buffer.numel() for buffer in buffers])
            with torch.no_grad():
                for buffer, value in zip(buffers, parts, strict=True):
                    buffer.copy_(value.view_as(buffer))

    def all_finite(self, finite: bool) -> bool:
        """Whether a batch's loss is finite on every rank (`finite`: on this one).

        Example:
            >>> import torch
            >>> from kiln.distributed.context import DistributedContext
            >>> replicas = Replicas(DistributedContext(0, 1, 0, torch.device("cpu"), None))
            >>> replicas.all_finite(True), replicas.all_finite(False)
            (True, False)
        """
        if not self.enabled:
            return finite
        flag = torch.tensor([0.0 if finite else 1.0], dtype=torch.float64)
        return bool(collectives.all_reduce(flag.to(self.context.device)).item() == 0)

    def training_step(self, method: Callable[[Any, int], Any]) -> Callable[[Any, int], Any]:
        """Return the step method `method` to run inside DDP's forward (one process: itself)."""
        return method if self._ddp is None else partial(self._ddp, method)

    def shard(self, batches: Any, train: bool) -> Any:
        """Return this rank's part of `batches` (training parts are of equal size).

        The shuffling seed of a `Data` and of shuffled loaders is rank 0's, so every rank
        cuts the same order.
        """
        if not self.enabled or batches is None:
            return batches
        data = getattr(batches, "data", batches)
        if hasattr(data, "seed") and hasattr(data, "set_epoch"):  # a kiln.Data
            data.seed = collectives.broadcast_object(data.seed)
        if self.loader_seed is None:  # torch's seed: reproducible, and draws no number
            self.loader_seed = collectives.broadcast_object(torch.initial_seed())
        rank, world = self.context.rank, self.context.world_size
        return shard(batches, rank, world, self.loader_seed, even=train)

    def sync(self, tracker: PassTracker) -> None:
        """Sum the pass's values over the ranks (every rank calls it at the end of a pass)."""
        if self.enabled:
            tracker.sync(collectives, self.context.device)

    def agree_stop(self, trainer: Trainer) -> None:
        """At the end of an epoch: a stop asked for on any rank stops every rank, for its reason."""
        if not self.enabled:
            return
        state = trainer.state
        asked = collectives.all_gather_objects(
            (state.should_stop, state.stop_reason, state.stop_resumable)
        )
        first = next((entry for entry in asked if entry[0]), None)
        if first is not None and not state.should_stop:
            state.should_stop, state.stop_reason, state.stop_resumable = first
