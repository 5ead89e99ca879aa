"""`BufferedMetric`: counting metrics that count a few dozen batches at a time.

What lives here: the base class of metrics whose state is a count (accuracy, the confusion
matrix and the scores read from it). What does not: the counting itself, in the subclasses.

On a small model, the cost of a metric is not its arithmetic but launching a few kernels per
step. A count does not depend on how the batches are grouped, so these metrics check each
batch at once (shapes, in Python, reading nothing from the device) and keep it, by reference,
counting the kept batches together every `buffer_batches` batches, or earlier when they hold
`buffer_elements` output elements, or when the value, the state or a sync is asked for. The
first batch of a pass is counted at once, so that a bad label is reported before training
goes on. The values are the same, to the bit, as counting every batch alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kiln.metrics.base import Metric
from kiln.metrics.sync import AllGather, AllReduce


class BufferedMetric(Metric):
    """A metric of counts: `_check` every batch at once, `_update` on several batches together.

    Subclasses implement `_check(output, target)` (raise for a batch that cannot be counted)
    and `_update(output, target)` (count batches, concatenated).

    Example:
        >>> import torch
        >>> from kiln.metrics import Accuracy
        >>> metric = Accuracy()
        >>> for _ in range(3):
        ...     metric.update(torch.tensor([[2.0, 1.0]]), torch.tensor([0]))
        >>> len(metric._outputs), float(metric.compute()), len(metric._outputs)
        (2, 1.0, 0)
    """

    #: Batches kept before they are counted together.
    buffer_batches = 32
    #: Output elements kept before they are counted together (4 MB of float32).
    buffer_elements = 1 << 20

    def reset(self) -> None:
        """Forget everything, kept batches included."""
        super().reset()
        self._outputs: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._elements = 0

    def _check(self, output: Any, target: Any) -> None:
        """Raise for a batch that cannot be counted (types, shapes, classes)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `_check`.")

    def _update(self, output: Tensor, target: Tensor) -> None:
        """Count one batch, or several concatenated."""
        raise NotImplementedError(f"{type(self).__name__} must implement `_update`.")

    def update(self, output: Any, target: Any) -> None:
        """Check one batch, and count it now or with the next ones."""
        self._check(output, target)
        if self._count == 0 and not self._outputs:
            self._update(output, target)
            return
        if self._outputs:
            last_output, last_target = self._outputs[-1], self._targets[-1]
            if (
                output.shape[1:] != last_output.shape[1:]
                or target.shape[1:] != last_target.shape[1:]
                or output.dtype != last_output.dtype
                or target.dtype != last_target.dtype
            ):
                self._flush()  # batches that cannot be concatenated are counted apart
        self._outputs.append(output)
        self._targets.append(target)
        self._elements += output.numel()
        if len(self._outputs) >= self.buffer_batches or self._elements >= self.buffer_elements:
            self._flush()

    def _flush(self) -> None:
        """Count the kept batches."""
        if not self._outputs:
            return
        outputs, targets = self._outputs, self._targets
        self._outputs, self._targets, self._elements = [], [], 0
        if len(outputs) == 1:
            self._update(outputs[0], targets[0])
        else:
            self._update(torch.cat(outputs), torch.cat(targets))

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
