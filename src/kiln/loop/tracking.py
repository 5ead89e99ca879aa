"""Accumulating one pass (an epoch's training or a validation) without waiting for the device.

What lives here: `PassTracker`, which keeps the batch losses, the values the batches log, and
the metrics, and turns them into epoch means once, at the end of the pass. What does not: the
history of epochs (`history.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from kiln.loop.step_methods import StepOutput

#: Per-batch values are stacked into one tensor every this many batches, so that a very long
#: epoch keeps a few large tensors instead of millions of small ones.
CHUNK = 1024


class _Series:
    """The values of one logged quantity over a pass, with the batch size of each."""

    __slots__ = ("chunks", "sizes", "values")

    def __init__(self) -> None:
        self.values: list[Tensor] = []
        self.chunks: list[Tensor] = []
        self.sizes: list[int] = []

    def add(self, value: Any, size: int) -> None:
        value = value.detach() if isinstance(value, Tensor) else torch.tensor(float(value))
        self.values.append(value)
        self.sizes.append(size)
        if len(self.values) == CHUNK:
            self.chunks.append(torch.stack(self.values))
            self.values = []

    def stacked(self) -> Tensor:
        """All values, one row per batch."""
        parts = self.chunks + ([torch.stack(self.values)] if self.values else [])
        return torch.cat(parts)

    def weighted(self) -> tuple[Tensor, Tensor]:
        """Each value times its batch size, one row per batch, and the sizes (as a column)."""
        values = self.stacked()
        dtype = torch.float32 if values.device.type == "mps" else torch.float64
        sizes = torch.tensor(self.sizes, dtype=dtype, device=values.device)
        sizes = sizes.reshape(-1, *([1] * (values.dim() - 1)))
        return values.to(dtype) * sizes, sizes

    def mean(self) -> Tensor:
        """The mean weighted by batch size (one value, or one per item of 1-D values)."""
        weighted, sizes = self.weighted()
        return weighted.sum(0) / sizes.sum()

    def state_dict(self) -> dict[str, Any]:
        """The values so far, on the CPU, and their batch sizes."""
        return {"values": self.stacked().cpu(), "sizes": list(self.sizes)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Continue from `state_dict`'s values; later values are appended after them."""
        # One chunk holding all saved values: the concatenation in `stacked`, and so every
        # mean, is the same tensor as in the run that saved them.
        self.chunks, self.values = [state["values"].to(device)], []
        self.sizes = [int(size) for size in state["sizes"]]


def _width(series: _Series) -> int:
    values = series.values[-1] if series.values else series.chunks[-1][-1]
    return max(values.numel(), 1)


def _scalar(series: _Series | None) -> bool:
    if series is None or not series.sizes:
        return True  # this process saw none; the others' width decides: one value is 0-dim
    values = series.values[-1] if series.values else series.chunks[-1][-1]
    return values.dim() == 0


class Collectives(Protocol):
    """The collectives `PassTracker.sync` uses (`kiln.distributed.collectives` has them)."""

    def all_reduce(self, tensor: Tensor) -> Tensor: ...  # noqa: D102
    def all_gather(self, tensor: Tensor) -> Tensor: ...  # noqa: D102
    def all_gather_objects(self, value: Any) -> list[Any]: ...  # noqa: D102


class PassTracker:
    """Collects a pass's losses, logged values and metrics; `compute` reads them once.

    Args:
        metrics: The metric objects updated with each batch's output and target.

    Example:
        >>> import torch
        >>> from kiln.loop.step_methods import StepOutput
        >>> tracker = PassTracker([])
        >>> tracker.update(StepOutput(torch.tensor(1.0), size=3))
        >>> tracker.update(StepOutput(torch.tensor(3.0), size=1))
        >>> tracker.compute()
        {'loss': 1.5}
    """

    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics
        self.reset()

    def reset(self) -> None:
        """Start a new pass."""
        self._series: dict[str, _Series] = {}
        self._loss = _Series()
        self._samples = 0
        self.tensors: dict[str, Tensor] = {}
        # Set by `sync`: the means over every process, which `compute` then reports.
        self._synced: dict[str, Tensor] | None = None
        self._synced_batch_losses: list[float] | None = None
        for metric in self.metrics:
            metric.reset()

    def update(self, output: StepOutput) -> None:
        """Add one batch's output."""
        self._samples += output.size
        if output.loss is not None:
            self._loss.add(output.loss, output.size)
        if output.logs:
            for key, value in output.logs.items():
                series = self._series.get(key)
                if series is None:
                    series = self._series[key] = _Series()
                series.add(value, output.size)
        if self.metrics:
            predicted, target = output.output, output.target
            # Kept by buffered metrics: without the graph (detached once for all of them).
            if isinstance(predicted, Tensor) and predicted.requires_grad:
                predicted = predicted.detach()
            for metric in self.metrics:
                metric.update(predicted, target)

    @property
    def samples(self) -> int:
        """Samples seen in this pass."""
        return self._samples

    @property
    def batches(self) -> int:
        """Batches with a loss seen in this pass (in training: the batches done)."""
        return len(self._loss.sizes)

    def state_dict(self) -> dict[str, Any]:
        """Return the pass so far, to continue it after a restart (a mid-epoch checkpoint).

        Raises:
            TypeError: If a metric cannot save its state (it has no `state_dict`).
        """
        for metric in self.metrics:
            if not callable(getattr(metric, "state_dict", None)):
                raise TypeError(
                    f"A mid-epoch checkpoint must save the metric {metric!r}, but it has no "
                    "`state_dict()`. Give it `state_dict`/`load_state_dict`, or save only at "
                    "the end of epochs."
                )
        return {
            "samples": self._samples,
            "loss": self._loss.state_dict() if self._loss.sizes else None,
            "series": {key: series.state_dict() for key, series in self._series.items()},
            "metrics": [metric.state_dict() for metric in self.metrics],
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Continue the pass saved by `state_dict`, with new values kept on `device`."""
        self.reset()
        self._samples = int(state["samples"])
        if state["loss"] is not None:
            self._loss.load_state_dict(state["loss"], device)
        for key, saved in state["series"].items():
            self._series[key] = _Series()
            self._series[key].load_state_dict(saved, device)
        for metric, saved in zip(self.metrics, state["metrics"], strict=True):
            metric.load_state_dict(saved)

    def batch_losses(self) -> list[float]:
        """The loss of every batch of the pass, in order (after `sync`: over every process)."""
        if self._synced_batch_losses is not None:
            return self._synced_batch_losses
        return self._loss.stacked().tolist() if self._loss.sizes else []

    def sync(self, collectives: Collectives, device: torch.device) -> None:
        """Replace this process's sums by those of every process, before `compute`.

        Every process calls it at the end of the same pass. The losses and logged values are
        summed with their batch sizes (so `compute` gives the sample-weighted means over all
        the data), each metric's `sync` combines its state, and when every process saw as
        many batches, the per-batch losses become the sample-weighted means of each batch
        position.

        Args:
            collectives: `all_reduce`, `all_gather` (see `kiln.metrics.sync`) and
                `all_gather_objects` (`kiln.distributed.collectives`).
            device: The device of the reductions (this process's training device).
        """
        everything = {"loss": self._loss, **self._series}
        local = {key: _width(series) for key, series in everything.items() if series.sizes}
        shapes = collectives.all_gather_objects((local, self.batches, self._samples))
        widths: dict[str, int] = {}
        for seen, _, _ in shapes:
            widths.update(seen)
        self._samples = sum(samples for _, _, samples in shapes)
        batch_counts = {batches for _, batches, _ in shapes}
        per_batch = len(batch_counts) == 1 and self.batches > 0
        parts: list[Tensor] = []
        for key in sorted(widths):
            series = everything.get(key)
            part = torch.zeros(widths[key] + 1, dtype=torch.float64, device=device)
            if series is not None and series.sizes:
                weighted, sizes = series.weighted()
                part[:-1] = weighted.sum(0).reshape(-1)
                part[-1] = sizes.sum()
            parts.append(part)
        if per_batch:
            weighted, sizes = self._loss.weighted()
            parts += [weighted.reshape(-1).to(device), sizes.reshape(-1).to(device)]
        summed = collectives.all_reduce(torch.cat(parts)) if parts else torch.zeros(0)
        self._synced, start = {}, 0
        for key in sorted(widths):
            width = widths[key]
            block = summed[start : start + width + 1]
            start += width + 1
            mean = block[:-1] / block[-1]
            scalar = width == 1 and _scalar(everything.get(key))
            self._synced[key] = mean.reshape(()) if scalar else mean
        if per_batch:
            count = self.batches
            losses = summed[start : start + count] / summed[start + count : start + 2 * count]
            self._synced_batch_losses = losses.tolist()
        for metric in self.metrics:
            sync = getattr(metric, "sync", None)
            if callable(sync):
                sync(collectives.all_reduce, collectives.all_gather)

    def compute(self) -> dict[str, float]:
        """Return the pass's values: `loss`, each logged value and each metric.

        Metric values of more than one number (a confusion matrix) are not returned: they
        are kept, on the CPU, in `tensors` (`{name: tensor}`) until the next `compute`.
        """
        values: dict[str, Tensor] = {}
        synced = self._synced
        if synced is not None and "loss" in synced:
            values["loss"] = synced["loss"]
        elif synced is None and self._loss.sizes:
            values["loss"] = self._loss.mean()
        means = (
            {key: series.mean() for key, series in self._series.items()}
            if synced is None
            else {key: mean for key, mean in synced.items() if key != "loss"}
        )
        for key, mean in means.items():
            if mean.dim() == 0:
                values[key] = mean
            else:  # a 1-D score: its first item is "the" score, the others are auxiliary
                for index, item in enumerate(mean):
                    values[key if index == 0 else f"{key}_{index}"] = item
        self.tensors = {}
        for metric in self.metrics:
            value = metric.compute()
            # A dict of values is logged as `name_key`; a value that is not one
            # number (a confusion matrix) is kept aside, in `tensors`, not logged.
            named = (
                {f"{metric.name}_{key}": item for key, item in value.items()}
                if isinstance(value, Mapping)
                else {metric.name: value}
            )
            for name, item in named.items():
                tensor = torch.as_tensor(item)
                if tensor.numel() == 1:
                    values[name] = tensor.reshape(())
                else:
                    self.tensors[name] = tensor.detach().cpu()
        # The one read from the device of the whole pass.
        return {key: float(value) for key, value in values.items()}
