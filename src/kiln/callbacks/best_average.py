"""`BestAverage`: best-N averaging, the mean of the best epochs' parameters.

What lives here: keeping the N best snapshots by a monitored value during `fit`, choosing those
close enough to the best at the end, averaging them into the model and writing `{name}_avg.pt`;
the two rules as small functions (`keep_slot`, `close_to_best`). What does not: running averages
along training (`EMA`, `SWA`), and the best un-averaged weights in a file, which `Checkpoint` or
the experiment directory's `best/` keep.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kiln.callbacks.base import Callback
from kiln.callbacks.monitor import resolve_mode
from kiln.checkpoint.files import atomic_save, remove_leftover_temporaries
from kiln.checkpoint.weights import weights_record
from kiln.distributed.context import is_main_process

if TYPE_CHECKING:
    from kiln.trainer import Trainer


def keep_slot(values: list[float], value: float, n: int, mode: str) -> int | None:
    """Where a new value goes among `n` kept ones: appended, in place of the worst, or nowhere.

    Returns `len(values)` while fewer than `n` are kept; once full, the index of the worst
    value when `value` is strictly better than it (the latest of equal worst ones); else None.
    NaN is never kept.

    Example:
        >>> keep_slot([0.5, 0.3], 0.9, n=3, mode="min"), keep_slot([0.5, 0.3], 0.4, 2, "min")
        (2, 0)
        >>> keep_slot([0.5, 0.3], 0.6, n=2, mode="min") is None
        True
    """
    if math.isnan(value):
        return None
    if len(values) < n:
        return len(values)
    sign = 1.0 if mode == "min" else -1.0
    worst = max(range(len(values)), key=lambda i: (sign * values[i], i))
    return worst if sign * value < sign * values[worst] else None


def close_to_best(values: list[float], within: float, mode: str) -> list[int]:
    """The indices of the values within a fraction `within` of the best one.

    For "min" with positive values (losses): keep `value / best < 1 + within`.
    In general, and for "max": keep the best and every value whose distance to it is less than
    `within * |best|` (so a best of 0 keeps only its equals).

    Example:
        >>> close_to_best([1.0, 1.05, 1.1, 2.0], within=0.1, mode="min")
        [0, 1]
        >>> close_to_best([0.9, 0.85, 0.8], within=0.1, mode="max")
        [0, 1]
    """
    best = min(values) if mode == "min" else max(values)
    return [
        index
        for index, value in enumerate(values)
        if value == best or abs(value - best) < within * abs(best)
    ]


class BestAverage(Callback):
    """Keep the parameters of the `n` best epochs; at the end, average the best of them.

    After each epoch, when `monitor` is among the `n` best values so far, a copy of the model's
    parameters is kept (once `n` are kept, the new one replaces the worst, if strictly better).
    When `fit` ends without an error (its last epoch, early stopping, a stop request), and more
    than one snapshot is kept, those within `within` of the best (`value / best < 1.1` for a
    loss, see `close_to_best`) are averaged, parameter by parameter, into the model, and with
    `name` written to `{name}_avg.pt`.

    Only parameters are averaged and kept: buffers (batch-norm running statistics) stay the
    model's own, from the last epoch. The snapshots stay on the model's device (N copies of the
    parameters) and in this callback's `state_dict`, so a resumed run keeps them. The
    un-averaged best parameters stay available: `restore_best(model)` loads them; for them in a
    file, add `Checkpoint(f"{name}.pt", monitor=..., save_best_only=True)` or use the experiment
    directory's `best/` checkpoints.

    Compatibility: PytorchTrainer's `n_best_nets`, rule for rule.

    Args:
        n: How many snapshots to keep.
        within: The fraction of the best value within which snapshots are averaged.
        monitor: The logged value that ranks epochs, such as `"val_loss"`; epochs without
            validation are skipped for a `val_` name.
        mode: `"min"`, `"max"` or `"auto"` (read from the name, as `EarlyStopping`).
        name: The file stem: the average is written to `{name}_avg.pt`, in the trainer's `dir`
            (or the current directory without one). `None`: no file.

    Attributes:
        snapshots: `(epoch, value)` of the kept snapshots.
        averaged_epochs: The epochs averaged at the end of the last `fit` (empty if none).
        saved_path: The file written at the end of the last `fit`, if any.

    Raises:
        ValueError: For a bad `n`, `within`, `mode` or `name`.

    Example:
        >>> import torch, kiln
        >>> X, Y = torch.randn(64, 3), torch.randn(64, 1)
        >>> best = BestAverage(n=3, monitor="val_loss")
        >>> trainer = kiln.Trainer(torch.nn.Linear(3, 1), loss="mse", callbacks=[best],
        ...                        device="cpu", progress=False)
        >>> history = trainer.fit((X, Y), val=(X, Y), epochs=5)
        >>> kept = sorted(value for _, value in best.snapshots)
        >>> len(kept), kept == sorted(history.val_loss)[:3]
        (3, True)
        >>> best.restore_best(trainer)  # the best epoch's own parameters, un-averaged
    """

    def __init__(
        self,
        n: int = 5,
        within: float = 0.1,
        monitor: str = "val_loss",
        mode: str = "auto",
        name: str | None = None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"BestAverage: `n` must be a positive integer; received {n!r}.")
        if isinstance(within, bool) or not isinstance(within, (int, float)) or not within >= 0:
            raise ValueError(
                "BestAverage: `within` must be a fraction of the best value, 0 or more (0.1 "
                f"averages the snapshots within 10% of the best); received {within!r}."
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(
                f"BestAverage: `name` must be a non-empty file stem such as 'digits' (which "
                f"writes digits_avg.pt), or None; received {name!r}."
            )
        self.n, self.within, self.monitor, self.name = n, float(within), monitor, name
        self.mode = resolve_mode("BestAverage", monitor, mode)
        self._kept: list[dict[str, Any]] = []  # {"epoch", "value", "params": {name: tensor}}
        self.averaged_epochs: list[int] = []
        self.saved_path: Path | None = None

    @property
    def snapshots(self) -> list[tuple[int, float]]:
        """`(epoch, value)` of each kept snapshot, in the order kept."""
        return [(entry["epoch"], entry["value"]) for entry in self._kept]

    def on_fit_start(self, trainer: Trainer) -> None:
        """Start afresh on a new run; carry on (on the model's device) over a resume."""
        if trainer.state.epoch == 0 and not trainer.state.resumed:
            self._kept, self.averaged_epochs = [], []
        params = dict(trainer.model.named_parameters())
        for entry in self._kept:
            if set(entry["params"]) != set(params):
                raise ValueError(
                    "BestAverage's saved snapshots hold the parameters "
                    f"{sorted(entry['params'])[:5]}..., but the model has "
                    f"{sorted(params)[:5]}...: they come from another architecture."
                )
            entry["params"] = {k: t.to(params[k].device) for k, t in entry["params"].items()}

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Keep a copy of the parameters when this epoch is among the `n` best."""
        logs = trainer.state.logs
        if self.monitor not in logs:
            if self.monitor.startswith("val_") and not any(k.startswith("val_") for k in logs):
                return  # no validation this epoch
            raise ValueError(
                f"BestAverage(monitor={self.monitor!r}) names a value that is not logged. "
                f"Logged values: {', '.join(sorted(logs))}."
            )
        value = float(logs[self.monitor])
        slot = keep_slot([entry["value"] for entry in self._kept], value, self.n, self.mode)
        if slot is None:
            return
        params = {k: p.detach().clone() for k, p in trainer.model.named_parameters()}
        entry = {"epoch": trainer.state.epoch, "value": value, "params": params}
        if slot == len(self._kept):
            self._kept.append(entry)
        else:
            self._kept[slot] = entry

    @torch.no_grad()
    def on_fit_end(self, trainer: Trainer) -> None:
        """Average the snapshots close to the best into the model, and write the file."""
        self.averaged_epochs = []
        if trainer.state.error is not None or len(self._kept) < 2:
            return
        chosen = close_to_best([entry["value"] for entry in self._kept], self.within, self.mode)
        entries = sorted((self._kept[i] for i in chosen), key=lambda entry: entry["epoch"])
        names = [name for name, _ in trainer.model.named_parameters()]
        total = [entries[0]["params"][name].clone() for name in names]
        for entry in entries[1:]:
            torch._foreach_add_(total, [entry["params"][name] for name in names])
        torch._foreach_div_(total, float(len(entries)))
        torch._foreach_copy_([p for _, p in trainer.model.named_parameters()], total)
        self.averaged_epochs = [entry["epoch"] for entry in entries]
        if self.name is not None and is_main_process():  # under torchrun rank 0 writes
            path = Path(f"{self.name}_avg.pt")
            if trainer.dir is not None:
                path = trainer.dir / path
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_leftover_temporaries(path.parent)  # of a run killed while writing
            record = weights_record(trainer.model, trainer.state.epoch)
            record["averaged_epochs"] = list(self.averaged_epochs)
            self.saved_path = atomic_save(record, path)

    def restore_best(self, target: Trainer | nn.Module) -> None:
        """Load the best snapshot's parameters (un-averaged) into a model or a trainer's model.

        Raises:
            ValueError: If no snapshot is kept yet.
        """
        model = target if isinstance(target, nn.Module) else getattr(target, "model", None)
        if not isinstance(model, nn.Module):
            raise TypeError(
                "BestAverage.restore_best needs a kiln.Trainer or a torch.nn.Module; received "
                f"{type(target).__name__}."
            )
        if not self._kept:
            raise ValueError("BestAverage has no snapshot yet: fit with validation data first.")
        best = close_to_best([entry["value"] for entry in self._kept], 0.0, self.mode)[0]
        params: dict[str, Tensor] = self._kept[best]["params"]
        with torch.no_grad():
            for key, parameter in model.named_parameters():
                parameter.copy_(params[key])

    def state_dict(self) -> dict[str, Any]:
        """Return the kept snapshots (tensors on the model's device) and the averaged epochs."""
        return {
            "snapshots": [dict(entry) for entry in self._kept],
            "averaged_epochs": list(self.averaged_epochs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self._kept = [
            {"epoch": int(e["epoch"]), "value": float(e["value"]), "params": dict(e["params"])}
            for e in state["snapshots"]
        ]
        self.averaged_epochs = [int(epoch) for epoch in state["averaged_epochs"]]
