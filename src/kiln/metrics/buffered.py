"""`BufferedMetric`: counting metrics that count many batches at a time.

What lives here: the base class of metrics whose state is a count (accuracy, the confusion
matrix and the scores read from it). What does not: the counting itself, in the subclasses.

On a small model, the cost of a metric is not its arithmetic but launching a few kernels per
batch. A count does not depend on how the batches are grouped, so these metrics check each
batch at once (shapes, in Python, reading nothing from the device) and keep it, by reference,
counting the kept batches together every `buffer_batches` batches, or earlier when one more
would take them past `buffer_elements` output elements, or when the value, the state or a sync
is asked for. The first batch of a pass is counted at once, so that a bad label is reported
before training goes on. The values are the same, to the bit, as counting every batch alone.

Per batch, the work is kept to a few attribute reads: a batch with the shapes and dtypes of the
batch before is neither checked again (the checks read nothing else) nor compared with the
kept ones, and metrics that keep the same batches (accuracy and F1 in one trainer)
concatenate them, and take their arg-max, once between them (`joined.py`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from kiln.metrics import joined
from kiln.metrics.base import Metric
from kiln.metrics.sync import AllGather, AllReduce


class BufferedMetric(Metric):
    """A metric of counts: `_check` every batch at once, `_update` on several batches together.

    Subclasses implement `_check(output, target)` (raise for a batch that cannot be counted;
    a batch that passes it vouches for the next ones of the same types, shapes and dtypes,
    which are not checked again) and `_update(output, target)` (count batches, concatenated,
    without changing them in place: other metrics may count the same tensors).

    Example:
        >>> import torch
        >>> from kiln.metrics import Accuracy
        >>> metric = Accuracy()
        >>> for _ in range(3):
        ...     metric.update(torch.tensor([[2.0, 1.0]]), torch.tensor([0]))
        >>> len(metric._outputs), float(metric.compute()), len(metric._outputs)
        (2, 1.0, 0)
    """

    #: Batches kept before they are counted together. Counting costs about a dozen kernel
    #: calls however many batches it counts: on a small model, many batches amortize them.
    buffer_batches = 128
    #: The most output elements counted together (4 MiB of float32; a larger batch is
    #: counted alone), so that the concatenation stays small beside the model.
    buffer_elements = 1 << 20

    def reset(self) -> None:
        """Forget everything, kept batches included."""
        super().reset()
        self._outputs: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._elements = 0
        # The shapes and dtypes of the last batch that passed `_check`: a batch of the same
        # layout passes it too (the checks read only these), so it is not checked again.
        self._layout: tuple[Any, ...] | None = None
        joined.forget()  # a new pass: the last pass's joined batches are not needed

    def _check(self, output: Any, target: Any) -> None:
        """Raise for a batch that cannot be counted (types, shapes, classes)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `_check`.")

    def _update(self, output: Tensor, target: Tensor) -> None:
        """Count one batch, or several concatenated."""
        raise NotImplementedError(f"{type(self).__name__} must implement `_update`.")

    def update(self, output: Any, target: Any) -> None:
        """Check one batch, and count it now or with the next ones."""
        # Most batches of a pass have the layout of the one before: then they were checked,
        # and can be concatenated with the kept ones, already. This runs at every batch.
        layout = (
            (output.shape, target.shape, output.dtype, target.dtype)
            if isinstance(output, Tensor) and isinstance(target, Tensor)
            else None
        )
        if layout is None or layout != self._layout:
            self._check(output, target)
            if self._outputs and not _joinable(
                self._outputs[-1], self._targets[-1], output, target
            ):
                self._flush()  # batches that cannot be concatenated are counted apart
            self._layout = layout
        if self._count == 0 and not self._outputs:
            self._count_kept([output], [target])
            return
        elements = output.numel()
        if self._elements + elements > self.buffer_elements:
            self._flush()  # the kept ones first: a concatenation never exceeds the limit
        self._outputs.append(output)
        self._targets.append(target)
        self._elements += elements
        if len(self._outputs) >= self.buffer_batches:
            self._flush()

    def _flush(self) -> None:
        """Count the kept batches."""
        if self._outputs:
            outputs, targets = self._outputs, self._targets
            self._outputs, self._targets, self._elements = [], [], 0
            self._count_kept(outputs, targets)

    def _count_kept(self, outputs: list[Tensor], targets: list[Tensor]) -> None:
        # Joined once for every metric that kept the same batches (see `joined.py`).
        batches = joined.join(outputs, targets)
        self._update(batches.output, batches.target)

    def _sums(self) -> Tensor:
        self._flush()
        return super()._sums()

    def state_dict(self) -> dict[str, Any]:
        """The counts so far, kept batches counted first."""
        self._flush()
        return super().state_dict()

    def sync(self, all_reduce: AllReduce, all_gather: AllGather) -> None:
        """Count the kept batches, then sum the counts of every process (`Metric.sync`)."""
        self._flush()
        super().sync(all_reduce, all_gather)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from the counts `state_dict` returned; batches kept before are dropped."""
        super().load_state_dict(state)
        self._outputs, self._targets, self._elements = [], [], 0
        self._layout = None  # checks may depend on the restored state (the task read)


def _joinable(output: Tensor, target: Tensor, new_output: Tensor, new_target: Tensor) -> bool:
    """Whether a new batch can be concatenated after a kept one."""
    return (
        new_output.shape[1:] == output.shape[1:]
        and new_target.shape[1:] == target.shape[1:]
        and new_output.dtype == output.dtype
        and new_target.dtype == target.dtype
    )
