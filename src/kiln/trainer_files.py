"""What a `Trainer` writes and reads: its state, saved files, exported weights, tested checkpoints.

What lives here: `TrainerFiles`, the part of `Trainer` that deals with files, kept apart so that
`trainer.py` holds the loop. What does not: the checkpoint format (`checkpoint/`), rebuilding a
model (`saving.py`, `rebuild.py`) and the experiment directory's layout (`experiment.py`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.checkpoint import directory as experiment_directory
from kiln.checkpoint import run as checkpoints
from kiln.distributed import is_main_process
from kiln.saving import trainer_file as saving

if TYPE_CHECKING:
    from torch import nn

    from kiln.history import Evaluation, History
    from kiln.trainer import Trainer


class TrainerFiles:
    """The file methods of `kiln.Trainer` (see there); not used on its own."""

    model: nn.Module
    dir: Path | None
    history: History

    def _trainer(self) -> Trainer:
        return self  # type: ignore[return-value]  # TrainerFiles is only ever a Trainer's base

    def state_dict(self) -> dict[str, Any]:
        """Return the whole training state as tensors and plain data.

        It holds the model, the optimizer, the counters, the history, the callbacks' states and
        every random generator.
        """
        return checkpoints.trainer_state(self._trainer())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state returned by `state_dict`, to continue that run exactly."""
        checkpoints.restore_trainer(self._trainer(), state, "the given state")

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
        """
        return experiment_directory.test_checkpoint(
            self._trainer(), data, checkpoint, name, batch_size
        )

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
        trainer = self._trainer()
        full_state = self._gather_sharded()
        if not is_main_process():  # under torchrun, rank 0 writes
            return Path(path)
        return saving.save_trainer(trainer, path, full_state)

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write the model's weights alone: `.safetensors`, or a plain `state_dict` (`.pt`).

        Returns:
            The path written.

        Example:
            >>> import tempfile, kiln
            >>> trainer = kiln.Trainer(kiln.MLP(2, [8], 1), loss="mse", device="cpu",
            ...                        progress=False)
            >>> trainer.export(tempfile.mkdtemp() + "/weights.safetensors").suffix
            '.safetensors'
        """
        full_state = self._gather_sharded()
        if not is_main_process():
            return Path(path)
        weights = None if full_state is None else full_state[0]
        return saving.export_weights(self.model, path, weights)

    def _gather_sharded(self) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """The whole model and optimizer states of a sharded model (every rank must call)."""
        trainer = self._trainer()
        if not trainer._replicas.sharded:
            return None
        from kiln.distributed.fsdp import full_state  # noqa: PLC0415  # a slow import

        return full_state(self.model, trainer.optimizer)
