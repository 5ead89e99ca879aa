"""`Estimator`: `fit`/`evaluate`/`predict` as methods of the model itself.

What lives here: the mixin, which builds a `Trainer` and delegates to it. What does not: any
training logic of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from kiln.history import Evaluation, History
from kiln.trainer import Trainer


class Estimator:
    """Give a model `fit`, `evaluate` and `predict` methods: `class Net(kiln.Estimator, nn.Module)`.

    Each `fit` builds a `kiln.Trainer` over the model with the given optimizer, loss, metrics
    and callbacks, and trains; `evaluate` and `predict` reuse that trainer (or build one without
    an optimizer when the model was never fitted). The trainer of the last `fit` is
    `net.trainer`.

    Example:
        >>> import torch, kiln
        >>> class Net(kiln.Estimator, torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.linear = torch.nn.Linear(4, 3)
        ...     def forward(self, x):
        ...         return self.linear(x)
        >>> net = Net()
        >>> X, Y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> history = net.fit((X, Y), epochs=2, loss="cross_entropy", device="cpu", progress=False)
        >>> net.predict(X).shape
        torch.Size([32, 3])
    """

    _kiln_trainer: Trainer | None = None

    @property
    def trainer(self) -> Trainer | None:
        """The trainer of the last `fit`, or `None`."""
        return self._kiln_trainer

    def fit(
        self,
        train: Any,
        val: Any = None,
        epochs: int = 20,
        *,
        optimizer: Any = "adam",
        loss: Any = None,
        lr: float | None = None,
        metrics: Any = None,
        callbacks: Iterable[Any] | None = None,
        device: str | int | bool | torch.device | None = "auto",
        progress: bool = True,
        batch_size: int | None = None,
    ) -> History:
        """Train the model; the arguments are those of `kiln.Trainer` and `Trainer.fit`."""
        trainer = Trainer(
            self._as_module(),
            loss=loss,
            optimizer=optimizer,
            lr=lr,
            metrics=metrics,
            callbacks=callbacks,
            device=device,
            progress=progress,
        )
        self._kiln_trainer = trainer
        return trainer.fit(train, val, epochs, batch_size=batch_size)

    def evaluate(
        self, data: Any, *, loss: Any = None, metrics: Any = None, batch_size: int | None = None
    ) -> Evaluation:
        """Measure the loss and metrics on `data` (those of the last `fit` unless given)."""
        trainer = self._kiln_trainer
        if trainer is None or loss is not None or metrics is not None:
            trainer = Trainer(
                self._as_module(),
                loss if loss is not None else getattr(trainer, "loss", None),
                optimizer=None,
                metrics=metrics,
                device=self._device(),
                progress=False,
            )
        return trainer.evaluate(data, batch_size=batch_size)

    def predict(self, inputs: Any, *, batch_size: int | None = None) -> Any:
        """Return the model's predictions on `inputs`, on the CPU (see `Trainer.predict`)."""
        trainer = self._kiln_trainer or Trainer(
            self._as_module(), optimizer=None, device=self._device(), progress=False
        )
        return trainer.predict(inputs, batch_size=batch_size)

    def _as_module(self) -> nn.Module:
        if not isinstance(self, nn.Module):
            raise TypeError(
                f"{type(self).__name__} uses kiln.Estimator but is not an nn.Module: declare it "
                "as `class Net(kiln.Estimator, nn.Module)`."
            )
        return self

    def _device(self) -> torch.device:
        parameter = next(self._as_module().parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def __getstate__(self) -> dict[str, Any]:
        # Copies and pickles of the model leave the trainer (and its optimizer) behind.
        state = dict(self.__dict__)
        state.pop("_kiln_trainer", None)
        return state
