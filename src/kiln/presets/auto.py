"""`AutoTrainer`: train a network on a dataset in one call, a preset of the one `kiln.Trainer`.

`AutoTrainer(net_builder, net_build_args).train(dataset, name=...)` configures a `Trainer` (a
`CriterionTrainer`, whose step method also logs the unscaled loss) with:

- the criterion: `MixedCriterion` by default (regression or binary per target column, read
  from the dataset; `criterion="multiclass"` for one class-index column);
- the optimizer `"ranger"` (RAdam inside Lookahead) at `learning_rate`;
- the split: `int(len(dataset) * train_prop)` samples for training, chosen as
  `torch.utils.data.random_split` chooses them with a generator seeded with 42 when `shuffle`
  (the same indices on every run), else the first ones;
- callbacks, all watching `val_score` (lower is better): `Score`, `golden_ratio_decay` (patience
  3, floor `learning_rate / 10`), `RestartOnPlateau` (with restarts), `EarlyStopping` (a 0.5%
  relative gain resets a countdown of 15% of `n_epochs`), `SaveBest` (`{name}.pt`),
  `BestAverage` + `SaveAverage` (`{name}_avg.pt`), `StopFile` (`./stop_{name}`) and `Report`.

What lives here: the class, and `fit_table` (the entry point for in-memory tables). What does
not: any loop (there is one, `Trainer.fit`), the criterion (`kiln.losses.mixed`), the files
(`files.py`) and the report (`report.py`).

Compatibility: PytorchTrainer's arguments, defaults, files and report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from kiln.callbacks import (
    BestAverage,
    Callback,
    EarlyStopping,
    RestartOnPlateau,
    StopFile,
    golden_ratio_decay,
)
from kiln.checkpoint.run import load_model_state
from kiln.data.in_memory import Data
from kiln.data.repeated import repeat
from kiln.devices import resolve_device
from kiln.history import History
from kiln.losses.mixed import CLASSES, MixedCriterion
from kiln.presets.files import AUTO_LOAD, SaveAverage, SaveBest, model_file, read_auto_record
from kiln.presets.inputs import as_dataset, batches, resolve_criterion, split, to_tensor
from kiln.presets.report import Report
from kiln.presets.scored import CriterionTrainer, Score
from kiln.saving.recipe import (
    RECIPE_ATTRIBUTE,
    check_recipe,
    rebuild_model,
    recipe_of,
    record_recipe,
)

MONITOR = "val_score"

if TYPE_CHECKING:
    from kiln.trainer import Trainer


class _LoadMethod:
    """`load` on an instance loads into it; on the class, it builds a new `AutoTrainer`."""

    def __get__(self, instance: AutoTrainer | None, owner: type[AutoTrainer]) -> Any:
        if instance is None:
            return lambda name, device="auto", builder=None: owner._from_file(name, device, builder)
        return instance._load_into


class AutoTrainer:
    """Train a network on a dataset in one call, and save the best weights on the way.

    Args:
        net_builder: A function (or class) returning a fresh network, or a network itself.
        net_build_args: Its arguments: a list or tuple (positional), or a dict (keywords).
        device: `"auto"`, `"cpu"`, `"cuda"`, `"cuda:1"`, ... as for `kiln.Trainer`.

    After `train`, `trainer` is the `kiln.Trainer` that ran (its `history`, `state`,
    callbacks), and `history` its history. `load(name)` on an instance loads `{name}.pt` into
    it; `AutoTrainer.load(name, builder=...)` on the class builds a new one from the file (a
    builder *class* is found from the file; a builder *function* must be passed, since kiln
    never calls a function named in a file).

    Example:
        >>> import os, tempfile, torch, kiln
        >>> X = torch.randn(200, 3)
        >>> Y = torch.cat([5 * X[:, :1] + 1, (X[:, 1:2] > 0).float()], 1)  # regression, binary
        >>> auto = AutoTrainer(kiln.MLP, [3, [16], 2], device="cpu")
        >>> name = os.path.join(tempfile.mkdtemp(), "demo")
        >>> history = auto.train(torch.utils.data.TensorDataset(X, Y), name=name, n_epochs=3,
        ...                      verbose=False)
        >>> auto.load(name).predict_dataset((X, Y), batch_size=50).shape
        (200, 2)
        >>> again = AutoTrainer.load(name, device="cpu")  # kiln.MLP is rebuilt by its class
        >>> bool(((again.predict(X[:5])[:, 1] >= 0) & (again.predict(X[:5])[:, 1] <= 1)).all())
        True
    """

    load = _LoadMethod()

    def __init__(
        self,
        net_builder: Callable[..., nn.Module] | nn.Module,
        net_build_args: Sequence[Any] | Mapping[str, Any] = (),
        device: str | int | bool | torch.device | None = "auto",
    ) -> None:
        if isinstance(net_builder, nn.Module):
            self.net_builder: Callable[..., nn.Module] | None = None
            self.args: tuple[Any, ...] = ()
            self.kwargs: dict[str, Any] = {}
            net = net_builder
        elif callable(net_builder):
            self.net_builder = net_builder
            self.args, self.kwargs = _arguments(net_build_args)
            net = self._build()
        else:
            raise TypeError(
                "AutoTrainer: `net_builder` must be a function (or class) returning a network, "
                f"or a torch.nn.Module; received {type(net_builder).__name__}."
            )
        self.device = resolve_device(device)
        self.net = net.to(self.device)
        self.criterion: Any = None
        self.trainer: CriterionTrainer | None = None
        self.history: History | None = None

    def _build(self) -> nn.Module:
        if self.net_builder is None:
            raise ValueError("AutoTrainer was given a network, not a builder: nothing to build.")
        net = self.net_builder(*self.args, **self.kwargs)
        if not isinstance(net, nn.Module):
            raise TypeError(
                f"AutoTrainer: net_builder returned a {type(net).__name__}; expected a "
                "torch.nn.Module."
            )
        own = recipe_of(net)  # a kiln.MLP or a kiln.build(...) records its own
        record_recipe(net, self.net_builder, tuple(self.args), self.kwargs)
        if recipe_of(net)["problem"] is not None and own["problem"] is None:
            setattr(net, RECIPE_ATTRIBUTE, own)  # a lambda builder of a rebuildable network
        return net

    def train(
        self,
        dataset: Any,
        name: str = "pytorch_model",
        batch_size: int = 16,
        criterion: Any = "auto",
        n_epochs: int = 50,
        train_prop: float = 0.9,
        learning_rate: float = 1e-3,
        n_workers: int = 0,
        verbose: bool = True,
        epoch_hook: Callable[[AutoTrainer], Any] | None = None,
        repeat_train: int = 1,
        repeat_valid: int = 1,
        n_best_nets: int = 1,
        with_restarts: bool = True,
        shuffle: bool = True,
        *,
        dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
    ) -> History:
        """Train on `dataset` with the preset; the best network is saved to `{name}.pt`.

        Args:
            dataset: A torch Dataset of `(input, target)` or `(input, weight, target)` items
                (its `collate_fn`, `switch_state`, `regression_flags` and `scale` are used), or
                a tuple `(X, Y)` / `(X, W, Y)` of tensors or arrays.
            name: The run's name: files `{name}.pt`, `{name}_avg.pt`, stop file `stop_{name}`.
            batch_size: Samples per training batch.
            criterion: `"auto"` (`MixedCriterion` of the dataset), `"multiclass"` (or
                `"multilabel"`, the same: one class-index target column,
                cross-entropy with the dataset's `class_weights`), a criterion object, or a
                class called with the dataset.
            n_epochs: The most epochs to train.
            train_prop: The share of samples used for training; the rest validates.
            learning_rate: The starting learning rate.
            n_workers: Worker processes of the DataLoaders.
            verbose: Print the report line of every epoch, and what the criterion guessed.
            epoch_hook: `hook(auto_trainer)`, called after every epoch.
            repeat_train: Passes over the training part per epoch (averaged in the logs).
            repeat_valid: Passes over the validation part per validation.
            n_best_nets: How many best epochs to keep and average at the end.
            with_restarts: Restart the optimizer on plateaus.
            shuffle: Split at random (the same split every run) rather than in order.
            dir: An experiment directory for `kiln.Trainer` (resumable runs, `last.ckpt`).
            resume: Continue the run saved in `dir`.

        Returns:
            The history: `loss` (scaled), `unscaled_loss`, `score`, their `val_` forms, `lr`.

        Raises:
            ValueError: For a bad `train_prop`, a dataset too small to split, or a criterion
                that does not fit the data.
            TypeError: For a criterion that is not one.
        """
        if not 0 < train_prop < 1:
            raise ValueError(
                f"AutoTrainer.train: `train_prop` is the share of samples used for training and "
                f"must lie strictly between 0 and 1 (the rest validates); received {train_prop!r}."
            )
        data = as_dataset(dataset)
        self.criterion = resolve_criterion(criterion, data, verbose)
        train_part, val_part = split(data, train_prop, shuffle)
        train_batches = batches(train_part, batch_size, True, n_workers)
        val_batches = batches(val_part, batch_size, False, n_workers)
        callbacks = auto_callbacks(name, self.criterion, n_best_nets, with_restarts, verbose)
        if epoch_hook is not None:
            callbacks.append(_EpochHook(lambda _trainer: epoch_hook(self)))
        self.trainer = CriterionTrainer(
            self.net, loss=self.criterion, optimizer="ranger", lr=learning_rate,
            callbacks=callbacks, device=self.device, dir=dir, progress=False,
        )  # fmt: skip
        try:
            self.history = self.trainer.fit(
                repeat(train_batches, repeat_train), val=repeat(val_batches, repeat_valid),
                epochs=n_epochs, resume=resume,
            )  # fmt: skip
        except FloatingPointError as error:
            # A diverged run does not come back: end it cleanly and keep what it has learnt.
            self.trainer.request_stop(f"Got nan and stopped: {error}")
            self.history = self.trainer.history
            if verbose:
                print(f"MESSAGE: name: {name} / Got nan and stopped: {error}", flush=True)
        return self.history

    def _load_into(self, name: str | os.PathLike[str]) -> AutoTrainer:
        """Load `{name}.pt` (weights and criterion) into this trainer's network; return self."""
        path = model_file(name)
        record = read_auto_record(path)
        load_model_state(self.net, record["model"], str(path))
        if record.get("criterion") is not None:
            self.criterion = MixedCriterion.from_state_dict(record["criterion"])
        return self

    @classmethod
    def _from_file(
        cls,
        name: str | os.PathLike[str],
        device: str | int | bool | torch.device | None = "auto",
        builder: Callable[..., nn.Module] | None = None,
    ) -> AutoTrainer:
        path = model_file(name)
        record = read_auto_record(path)
        recipe = check_recipe(record.get("recipe"), str(path))
        # Built on the meta device first, and compared with the weights before any memory.
        net = rebuild_model(recipe, builder, str(path), weights=record["model"], hints=AUTO_LOAD)
        auto = cls(net, device=device)
        auto.net_builder = builder
        auto.args, auto.kwargs = tuple(recipe["args"]), dict(recipe["kwargs"])
        return auto._load_into(path)

    def _predictor(self) -> CriterionTrainer:
        if self.criterion is None:
            raise ValueError(
                "AutoTrainer has no criterion yet, so it cannot post-process predictions: "
                "`train` first, or `load(name)` a saved model."
            )
        return CriterionTrainer(
            self.net, loss=self.criterion, optimizer=None, device=self.device, progress=False
        )

    def predict_dataset(self, dataset: Any, batch_size: int = 1, verbose: bool = True) -> Any:
        """Return the post-processed predictions for a dataset in the training format.

        The items' targets are needed by the format but not used. `verbose` is accepted and
        ignored: nothing is printed.

        Returns:
            A numpy array, one row per item.
        """
        data = as_dataset(dataset)
        if isinstance(data, TensorDataset):
            data = Data(data.tensors, batch_size=batch_size)
            return _numpy(self._predictor().predict(data))
        return _numpy(self._predictor().predict(data, batch_size=batch_size))

    def predict(self, *data: Any) -> Any:
        """Return the post-processed predictions for raw inputs, one forward pass per batch.

        Args:
            *data: The network's inputs: `predict(x)` for `net(x)`, `predict(x1, x2)` for
                `net(x1, x2)`; tensors or numpy arrays with one row per sample.

        Returns:
            A numpy array.
        """
        if not data:
            raise ValueError("AutoTrainer.predict needs the network's inputs: predict(x).")
        inputs = [to_tensor(d) for d in data]
        return _numpy(self._predictor().predict(inputs[0] if len(inputs) == 1 else inputs))


class _EpochHook(Callback):
    """Calls `hook(trainer)` at the end of each epoch (`AutoTrainer.train`'s `epoch_hook`)."""

    def __init__(self, hook: Callable[[Trainer], Any]) -> None:
        self.hook = hook

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Call the hook with the trainer."""
        self.hook(trainer)


def auto_callbacks(
    name: str | os.PathLike[str],
    criterion: Any = None,
    n_best_nets: int = 1,
    with_restarts: bool = True,
    verbose: bool = True,
) -> list[Any]:
    """Return the preset's callbacks, in order, for a `CriterionTrainer` of one's own.

    `Score`, `golden_ratio_decay`, `RestartOnPlateau` (with restarts), `EarlyStopping`,
    `SaveBest` (`{name}.pt`), `BestAverage` and `SaveAverage` (`{name}_avg.pt`), `StopFile`
    (`./stop_{name}`) and, with `verbose`, `Report`: all watch `val_score`, lower is better.

    Example:
        >>> [type(cb).__name__ for cb in auto_callbacks("demo", verbose=False)][:4]
        ['Score', 'LRScheduler', 'RestartOnPlateau', 'EarlyStopping']
    """
    averaging = BestAverage(n_best_nets, within=0.1, monitor=MONITOR, mode="min")
    callbacks: list[Any] = [
        Score(),
        golden_ratio_decay(MONITOR, patience=3, min_lr_ratio=0.1, mode="min"),
    ]
    if with_restarts:  # after the LR decay: a restarted schedule is not stepped at once
        callbacks.append(RestartOnPlateau(verbose=verbose))
    callbacks += [
        EarlyStopping(MONITOR, "min", patience=0.15, min_rel_delta=0.005, countdown=True),
        SaveBest(model_file(name), criterion, MONITOR),
        averaging,
        SaveAverage(model_file(name, "_avg"), criterion, averaging),  # after the averaging
        StopFile(name=Path(name).name),
    ]
    if verbose:
        callbacks.append(Report(os.fspath(name)))  # after EarlyStopping: reads its countdown
    return callbacks


def _arguments(args: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(args, Mapping):
        return (), dict(args)
    if isinstance(args, (list, tuple)):
        return tuple(args), {}
    raise TypeError(
        "AutoTrainer: `net_build_args` must be a list or tuple (positional arguments) or a "
        f"dict (keyword arguments); received {type(args).__name__}."
    )


def _numpy(predictions: Any) -> Any:
    return predictions.numpy() if isinstance(predictions, Tensor) else predictions


def fit_table(
    inputs: Tensor,
    targets: Tensor,
    *,
    weights: Tensor | None = None,
    kinds: Sequence[str | int] | None = None,
    name: str | os.PathLike[str] = "model",
    hidden: Sequence[int] = (64, 64),
    drop: float = 0.0,
    device: str | int | bool | torch.device | None = "auto",
    **options: Any,
) -> AutoTrainer:
    """Train the auto preset's MLP on an in-memory table (tensors), in one call.

    The network is a `kiln.tables.model.ScaledMLP`: the MLP behind the scaling `kiln fit` gives
    numeric columns (each column centred on its median, divided by its quartile distance,
    softly clipped), held in the network, so `predict` takes raw inputs and a saved model
    carries its scaling. Without it the MLP saw raw units: on the development tables
    (`bench/fit_table.py`, docs/benchmarks.md) wine's accuracy was 0.63 instead of 0.97, and
    Friedman #2 (inputs up to 1,700) diverged.

    Compatibility: the options are `AutoTrainer.train`'s, spelled as the PytorchTrainer README
    spells them (`n_epochs`, `learning_rate`); `kiln fit data.csv` reads files instead.

    Args:
        inputs: Features, shape `(N, F)`.
        targets: Targets, shape `(N, T)` (or `(N,)`): NaN where unknown.
        weights: Optional weights, `(N,)` per sample or `(N, T)` per target column.
        kinds: Per target column `"regression"`, `"binary"` or a number of classes (its column
            then holds the class index); `None`: guessed from the targets.
        name: The run's name (may hold a directory): `{name}.pt`, `{name}_avg.pt`.
        hidden: The MLP's hidden widths.
        drop: The MLP's dropout.
        device: Where to train.
        **options: Any `AutoTrainer.train` option (`n_epochs`, `batch_size`, `verbose`, ...).

    Returns:
        The trained `AutoTrainer` (`.history`, `.predict(x)`, `.load(name)`).

    Example:
        >>> import os, tempfile, torch
        >>> X = torch.randn(100, 4)
        >>> auto = fit_table(X, X[:, :1] * 3, name=os.path.join(tempfile.mkdtemp(), "t"),
        ...                  hidden=[8], n_epochs=2, verbose=False, device="cpu")
        >>> auto.predict(X).shape
        (100, 1)
    """
    inputs, targets = torch.as_tensor(inputs).float(), torch.as_tensor(targets).float()
    targets = targets.reshape(-1, 1) if targets.dim() == 1 else targets
    parts = (inputs, targets) if weights is None else (inputs, torch.as_tensor(weights), targets)
    verbose = bool(options.get("verbose", True))
    criterion = MixedCriterion(parts, kinds=kinds, verbose=verbose)
    if CLASSES in criterion.kinds:
        raise ValueError(
            "fit_table needs the number of classes of a multiclass column: pass kinds=[..., K]."
        )
    width = sum(1 if isinstance(kind, str) else kind for kind in criterion.kinds)
    from kiln.tables.model import RobustScale, ScaledMLP

    scale = RobustScale.fit(inputs)  # from all rows: only the column statistics, no targets
    net_args = {"center": scale.center.tolist(), "spread": scale.spread.tolist(),
                "hidden": list(hidden), "output": width, "drop": drop}  # fmt: skip
    auto = AutoTrainer(ScaledMLP, net_args, device=device)
    auto.train(parts, name=os.fspath(name), criterion=criterion, **options)
    return auto
