"""`BestModels`: keep, in memory, the weights of the epochs with the best loss and best score.

What lives here: the best validation loss and score, with the model's weights at those epochs,
and rolling the model back to either. What does not: best weights in files (`Checkpoint`), or
stopping when nothing improves (`EarlyStopping`).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from kiln.callbacks.base import Callback
from kiln.callbacks.monitor import improved, initial_best, resolve_mode
from kiln.checkpoint.run import load_model_state

if TYPE_CHECKING:
    from kiln.trainer import Trainer

_WHICH = ("loss", "score")


def _cpu_copy(model: nn.Module) -> dict[str, Tensor]:
    """A copy of the weights on the CPU, so that a GPU keeps no second model in its memory."""
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


def _or_initial(best: float | None, mode: str) -> float:
    """The best value so far, or the value every first result beats (NaN never does)."""
    return initial_best(mode) if best is None else best


class BestModels(Callback):
    """Keep the weights of the best-loss epoch and of the best-score epoch, on the CPU.

    After each epoch, a strictly lower `loss` value replaces the best loss and its weights; a
    strictly better `score` value (higher with `score_mode="max"`) replaces the best score and
    its weights. Epochs without validation are skipped for `val_` names. The values, epochs and
    weights carry on across `fit` calls of the same trainer and over a resume.

    Args:
        loss: The logged loss to minimize, such as `"val_loss"`.
        score: The logged score, such as `"val_score"` (what a `training_step` returning
            `{"loss": ..., "score": ...}` logs from validation), or None to follow the loss only.
        score_mode: `"max"` when a higher score is better, `"min"` when lower is, or `"auto"`
            to read it from the name.

    Attributes:
        loss: The best loss so far (None before the first).
        loss_epoch: The epoch (1-based) of the best loss.
        loss_weights: The model's `state_dict` after that epoch.
        score: The best score so far (None before the first, or when not followed).
        score_epoch: The epoch of the best score.
        score_weights: The model's `state_dict` after that epoch.

    Example:
        >>> import torch, kiln
        >>> X, Y = torch.randn(64, 3), torch.randn(64, 1)
        >>> best = BestModels(loss="val_loss", score=None)
        >>> trainer = kiln.Trainer(torch.nn.Linear(3, 1), loss="mse", callbacks=[best],
        ...                        device="cpu", progress=False)
        >>> history = trainer.fit((X, Y), val=(X, Y), epochs=3)
        >>> best.loss == min(history.val_loss)
        True
        >>> best.loss_epoch == history.val_loss.index(best.loss) + 1
        True
        >>> best.restore(trainer, "loss")  # roll back to the best-loss weights
        >>> frozen = best.model("loss")    # or take a copy of the model with them
    """

    def __init__(
        self, loss: str = "val_loss", score: str | None = "val_score", score_mode: str = "max"
    ) -> None:
        self.loss_name = loss
        self.score_name = score
        self.score_mode = "max" if score is None else resolve_mode("BestModels", score, score_mode)
        self._model: nn.Module | None = None
        self._reset()

    def _reset(self) -> None:
        self.loss: float | None = None
        self.loss_epoch: int | None = None
        self.loss_weights: dict[str, Tensor] | None = None
        self.score: float | None = None
        self.score_epoch: int | None = None
        self.score_weights: dict[str, Tensor] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        """Start afresh on a new run; a resumed run or a further `fit` carries on."""
        self._model = trainer.model
        if trainer.state.epoch == 0 and not trainer.state.resumed:
            self._reset()

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Copy the weights when this epoch has the best loss or the best score."""
        self._model = trainer.model
        epoch, logs = trainer.state.epoch, trainer.state.logs
        loss = self._value(self.loss_name, logs)
        if loss is not None and improved(loss, _or_initial(self.loss, "min"), "min"):
            self.loss, self.loss_epoch = loss, epoch
            self.loss_weights = _cpu_copy(trainer.model)
        if self.score_name is None:
            return
        score = self._value(self.score_name, logs)
        if score is not None and improved(
            score, _or_initial(self.score, self.score_mode), self.score_mode
        ):
            self.score, self.score_epoch = score, epoch
            self.score_weights = _cpu_copy(trainer.model)

    def _value(self, name: str, logs: dict[str, float]) -> float | None:
        """Return the logged value, or None in an epoch without validation."""
        if name in logs:
            return float(logs[name])
        if name.startswith("val_") and not any(key.startswith("val_") for key in logs):
            return None
        hint = " (or score=None if the model logs no score)" if name == self.score_name else ""
        raise ValueError(
            f"BestModels follows {name!r}, which is not logged. Logged values: "
            f"{', '.join(sorted(logs))}. Pass the name of one of them{hint}."
        )

    def _weights(self, which: str) -> dict[str, Tensor]:
        if which not in _WHICH:
            raise ValueError(f"BestModels: `which` must be 'loss' or 'score'; received {which!r}.")
        weights = self.loss_weights if which == "loss" else self.score_weights
        if weights is None:
            followed = self.loss_name if which == "loss" else self.score_name
            raise ValueError(
                f"BestModels has no best-{which} weights yet (it follows {followed!r}): train "
                "with validation data first, or pass the other `which`."
            )
        return weights

    def restore(self, trainer_or_model: Trainer | nn.Module, which: str = "score") -> None:
        """Load the best-`which` weights into the model (roll back to that epoch).

        Args:
            trainer_or_model: A `Trainer` (its model is changed) or an `nn.Module`.
            which: `"score"` or `"loss"`.

        Raises:
            ValueError: If `which` is unknown, no such weights were kept yet, or the model has
                another architecture.
        """
        weights = self._weights(which)
        model: Any = trainer_or_model
        if not isinstance(model, nn.Module):
            model = getattr(trainer_or_model, "model", None)
        if not isinstance(model, nn.Module):
            raise TypeError(
                "BestModels.restore needs a kiln.Trainer or a torch.nn.Module; received "
                f"{type(trainer_or_model).__name__}."
            )
        load_model_state(model, weights, f"BestModels' best-{which} weights")

    def model(self, which: str = "score") -> nn.Module:
        """Return a copy of the trainer's model holding the best-`which` weights.

        The trainer's own model is left as it is.

        Raises:
            ValueError: If `which` is unknown or no such weights were kept yet.
        """
        weights = self._weights(which)
        if self._model is None:  # weights come from a saved state, before any fit
            raise ValueError(
                "BestModels.model copies the trainer's model, but this callback has not been "
                "part of a fit yet. Use `restore(model, which)` on a model you built instead."
            )
        model = copy.deepcopy(self._model)
        load_model_state(model, weights, f"BestModels' best-{which} weights")
        return model

    def state_dict(self) -> dict[str, Any]:
        """Return the best values, their epochs and weights."""
        return {
            "loss": self.loss,
            "loss_epoch": self.loss_epoch,
            "loss_weights": self.loss_weights,
            "score": self.score,
            "score_epoch": self.score_epoch,
            "score_weights": self.score_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.loss, self.loss_epoch = state["loss"], state["loss_epoch"]
        self.loss_weights = state["loss_weights"]
        self.score, self.score_epoch = state["score"], state["score_epoch"]
        self.score_weights = state["score_weights"]
