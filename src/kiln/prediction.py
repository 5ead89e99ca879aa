"""`Trainer.predict`: the model's outputs on new inputs, concatenated over batches, on the CPU.

What lives here: `Predicting`, the part of `kiln.Trainer` that predicts, kept apart so that
`trainer.py` holds the training loop. What does not: what one batch's prediction is
(`predict_step`, in `step.py`) and turning inputs into batches (`sources.py`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from kiln.data.batch import concat_outputs, on_device, to_device
from kiln.data.sources import iterate_inputs, num_batches
from kiln.loop.batch_step import find_model_steps
from kiln.loop.passes import with_switch_state
from kiln.loop.precision import full_precision


class Predicting:
    """The `predict` method of `kiln.Trainer` (see there); not used on its own."""

    model: nn.Module
    device: torch.device
    _model_steps: dict[str, Any]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError  # the Trainer's: autocast of its precision

    def predict_step(self, batch: Any, batch_idx: int) -> Any:  # noqa: D102  # the Trainer's
        raise NotImplementedError

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
        """
        batches = iterate_inputs(inputs, batch_size)
        self._model_steps = find_model_steps(self.model)
        outputs = []
        self.model.eval()
        iterator = with_switch_state(batches, batches, num_batches(batches), 0)
        with torch.inference_mode(), self._autocast():
            for batch_idx, batch in enumerate(on_device(iterator, self.device)):
                outputs.append(self.predict_step(batch, batch_idx))
        if not outputs:
            raise ValueError("`predict` received no samples.")
        return to_device(full_precision(concat_outputs(outputs)), torch.device("cpu"))
