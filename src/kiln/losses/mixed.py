"""`MixedCriterion`: one loss for mixed targets, regression or classification per column.

Each target column is a regression (MSE on the standardised target), a binary classification
(BCE on logits) or a multiclass classification (cross-entropy over a group of output columns).
The kinds and the scaling come from the dataset's `regression_flags` and `scale` attributes, or
are read from up to 1000 of its samples. NaN targets are left out. The loss has two faces: the
*scaled* loss, which training minimises, and the *unscaled* one (regression columns in the
targets' own units), which says how good the predictions are.

What lives here: the criterion, and reading target columns from a dataset. What does not: how
the trainer calls a loss (`function.py`), and logging the unscaled loss and its square root,
the "score" (`kiln.presets`).

Compatibility: PytorchTrainer's `MixedCriterion`, with its dataset attributes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Kinds of target columns; an int K >= 2 is a multiclass column with K classes.
REGRESSION, BINARY, CLASSES = "regression", "binary", "classes"


def sample_targets(dataset: Any, samples: int = 1000, seed: int = 42) -> np.ndarray:
    """Return up to `samples` targets of `dataset`, one row each, as a float64 array.

    Rows are drawn without replacement by `numpy.random.RandomState(seed)` (all of them for a
    small dataset), so the same dataset always gives the same rows. The target is the last item
    of a sample (`(x, y)` or `(x, w, y)`); a `TensorDataset`, a `kiln.Data` or a tuple of tensors
    is read without touching samples one by one.

    Example:
        >>> import torch
        >>> sample_targets((torch.zeros(5, 2), torch.arange(5.0)), samples=3).shape
        (3, 1)
    """
    tensors = _tensors_of(dataset)
    total = len(tensors[-1]) if tensors is not None else len(dataset)
    if total == 0:
        raise ValueError("MixedCriterion received an empty dataset; it has no targets to read.")
    if total <= samples:
        rows = np.arange(total)
    else:
        rows = np.sort(np.random.RandomState(seed).choice(total, samples, replace=False))
    if tensors is not None:
        targets = torch.as_tensor(tensors[-1])[torch.as_tensor(rows)]
    else:
        targets = torch.stack([torch.as_tensor(dataset[int(i)][-1]) for i in rows])
    values = targets.detach().cpu().double().numpy()
    return values.reshape(len(rows), -1)


def _tensors_of(dataset: Any) -> Sequence[Any] | None:
    if isinstance(dataset, (tuple, list)) and all(hasattr(t, "__len__") for t in dataset):
        return dataset
    tensors = getattr(dataset, "tensors", None)  # TensorDataset, kiln.Data
    return tensors if isinstance(tensors, (tuple, list)) and tensors else None


def guess_regression_flags(targets: np.ndarray) -> list[int]:
    """Return 1 for a regression column, 0 for a column whose values are all 0 or 1 (or NaN).

    Example:
        >>> guess_regression_flags(np.array([[0.0, 2.5], [1.0, float("nan")], [1.0, 0.0]]))
        [0, 1]
    """
    flags = []
    for column in targets.T:
        values = column[~np.isnan(column)]
        flags.append(0 if np.all((values == 0) | (values == 1)) else 1)
    return flags


class MixedCriterion:
    """The auto criterion: each target column a regression or a classification, NaN left out.

    Regression columns are standardised with `scale = [mean, std]` (classification columns get
    mean 0 and std 1) and compared with MSE; binary columns use BCE on logits (the network
    outputs logits; `postproc` applies the sigmoid); a multiclass column holds a class index
    and uses cross-entropy over its group of K output columns (softmax in `postproc`). The loss
    is the mean over target columns of each column's mean over its non-NaN targets. An output
    of shape `(B, M, O)` holds the outputs of M ensemble members side by side (as
    `kiln.tables.model.TableNet` gives them in training): the loss is then the mean of the
    members' own losses, so that each learns on its own.

    Weights, as in `(x, w, y)` batches, are not normalised (kiln's rule: the mean of
    `weight * loss`): shape `(B,)` or `(B, 1)` weighs each sample, `(B, T)` each sample's target
    column (T target columns), and `(B, O)` each output column when O differs from T (a
    multiclass column then takes the weight of the sample's true class). `class_weights` weigh
    the classes of every multiclass column, as in `torch.nn.CrossEntropyLoss(weight=...)`.

    `criterion(output, target, weights=None, unscaled=False)` returns the scaled loss (for
    backpropagation) or, with `unscaled=True`, the loss with regression columns in the targets'
    own units (for reports, early stopping and choosing the best weights); `both` returns the
    two from one computation.

    Args:
        dataset: Where to read what is not given: its `regression_flags` and `scale`
            attributes, else up to `samples` of its targets (classification iff every non-NaN
            value is 0 or 1; mean and standard deviation of regression columns). `None` when
            everything is given.
        kinds: One entry per target column: `"regression"`, `"binary"`, an int K >= 2 (a
            multiclass column with K classes), or `"classes"` (K read from the output's width;
            for one column at most). Wins over `regression_flags`.
        regression_flags: 1 (regression) or 0 (binary) per target column.
        scale: `[mean, std]`, one value each per target column.
        class_weights: The weight of each class of the multiclass columns.
        samples: How many targets to read from `dataset`.
        seed: Which targets: the seed of their random choice.
        verbose: Print what was guessed and computed, one `MESSAGE:` line each.
        smoothing: Label smoothing of the classification columns in the scaled loss, the one
            training minimises: a binary target t counts as `t * (1 - s) + s / 2`, a class as
            in `F.cross_entropy(label_smoothing=s)`. The unscaled loss is never smoothed.

    Raises:
        ValueError: If the kinds are neither given nor readable, or do not fit the data.

    Example:
        >>> import torch
        >>> y = torch.tensor([[10.0, 0.0], [30.0, 1.0], [20.0, float("nan")]])
        >>> criterion = MixedCriterion((torch.zeros(3, 4), y))
        >>> criterion.kinds, criterion.mean.tolist()
        (['regression', 'binary'], [20.0, 0.0])
        >>> out = torch.zeros(3, 2)
        >>> scaled, unscaled = criterion.both(out, y)
        >>> round(float(unscaled), 3)  # (200/3 mean squared error + log 2) / 2 columns
        33.68
        >>> criterion.postproc(torch.zeros(1, 2)).tolist()  # the mean, and a probability
        [[20.0, 0.5]]
    """

    def __init__(
        self,
        dataset: Any = None,
        *,
        kinds: Sequence[str | int] | None = None,
        regression_flags: Sequence[int] | None = None,
        scale: Sequence[Sequence[float]] | None = None,
        class_weights: Sequence[float] | Tensor | None = None,
        samples: int = 1000,
        seed: int = 42,
        verbose: bool = False,
        smoothing: float = 0.0,
    ) -> None:
        self.verbose = verbose
        if not (isinstance(smoothing, (int, float)) and 0 <= smoothing < 1):
            raise ValueError(
                f"MixedCriterion: `smoothing` must be a number in [0, 1); received {smoothing!r}."
            )
        self.smoothing = float(smoothing)
        targets: np.ndarray | None = None
        if regression_flags is None and kinds is None and dataset is not None:
            regression_flags = getattr(dataset, "regression_flags", None)
        if kinds is None and regression_flags is None:
            if dataset is None:
                raise ValueError(
                    "MixedCriterion needs the kind of each target column: pass a dataset to "
                    "read them from, `regression_flags=[1, 0]` (1: regression, 0: binary) or "
                    "`kinds=['regression', 'binary']`."
                )
            self._say("Guessing regression flags from dataset...")
            targets = sample_targets(dataset, samples, seed)
            regression_flags = guess_regression_flags(targets)
            self._say(f"Regression flags: {regression_flags}")
        self.kinds = _check_kinds(kinds if kinds is not None else _kinds_of(regression_flags))
        count = len(self.kinds)
        regression = torch.tensor([kind == REGRESSION for kind in self.kinds])
        if scale is None and dataset is not None:
            scale = getattr(dataset, "scale", None)
        if scale is None and not bool(regression.any()):
            self._say("Classification only dataset, no scaling required...")
            scale = [[0.0] * count, [1.0] * count]
        if scale is None:
            if dataset is None:
                raise ValueError(
                    "MixedCriterion has regression columns but no `scale=[mean, std]` and no "
                    "dataset to compute it from: pass one of them."
                )
            targets = sample_targets(dataset, samples, seed) if targets is None else targets
            scale = _scale_of(targets, regression.numpy())
            self._say(f"Got constants: {np.round(scale[0], 2)}, {np.round(scale[1], 2)}")
        mean, std = (torch.as_tensor(np.asarray(part, dtype=np.float64)) for part in scale)
        if mean.shape != (count,) or std.shape != (count,):
            raise ValueError(
                f"MixedCriterion: `scale` must be [mean, std] with {count} values each (one per "
                f"target column); received shapes {tuple(mean.shape)} and {tuple(std.shape)}."
            )
        # Classification targets are 0/1 as they are: mean 0 and std 1, whatever `scale` says.
        self.mean = torch.where(regression, mean, 0.0).float()
        self.std = torch.where(regression & (std != 0), std, 1.0).float()
        self.class_weights = (
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        self._regression = regression
        self._layout: tuple[int, list[tuple[int, int, int]]] | None = None

    def _say(self, message: str) -> None:
        if self.verbose:
            print(f"MESSAGE: {message}", flush=True)

    def _to(self, device: torch.device) -> None:
        if self.mean.device != device:  # moved once, when the first batch arrives
            self.mean, self.std = self.mean.to(device), self.std.to(device)
            self._regression = self._regression.to(device)
            if self.class_weights is not None:
                self.class_weights = self.class_weights.to(device)

    def _groups(self, width: int) -> list[tuple[int, int, int]]:
        """`(target column, first output column, output columns)` per multiclass column."""
        if self._layout is not None and self._layout[0] == width:
            return self._layout[1]
        fixed = sum(1 if isinstance(kind, str) else kind for kind in self.kinds)
        inferred = width - fixed + 1  # the width left for a "classes" column
        groups, start = [], 0
        for column, kind in enumerate(self.kinds):
            size = 1 if kind in (REGRESSION, BINARY) else (inferred if kind == CLASSES else kind)
            if not isinstance(size, int) or size < 1 or (kind == CLASSES and size < 2):
                break
            if kind not in (REGRESSION, BINARY):
                groups.append((column, start, size))
            start += size
        if start != width:
            needed = f"{fixed + 1} or more" if CLASSES in self.kinds else str(fixed)
            raise ValueError(
                f"MixedCriterion: the model's output has {width} columns, but the target "
                f"columns {self.kinds} need {needed} (one per regression or binary column, K "
                "per multiclass column). Make the network's last layer that wide."
            )
        self._layout = (width, groups)
        return groups

    def columns(
        self,
        output: Tensor,
        target: Tensor,
        weights: Tensor | None = None,
        smoothing: float = 0.0,
    ) -> Tensor:
        """Return the scaled loss of each target column, shape `(T,)`, labels smoothed so.

        Raises:
            ValueError: If the shapes of output, target or weights do not fit the columns.
        """
        count = len(self.kinds)
        output = output.reshape(-1, 1) if output.dim() == 1 else output
        target = target.reshape(-1, 1) if target.dim() == 1 and count == 1 else target
        if output.dim() == 3 and len(output) == len(target):
            # an ensemble's members side by side, (batch, members, columns): the mean of the
            # members' own losses, each member's rows against the same targets
            members = output.shape[1]
            output = output.reshape(-1, output.shape[2])
            target = target.repeat_interleave(members, 0)
            if weights is not None:
                weights = weights.repeat_interleave(members, 0)
        if output.dim() != 2 or target.dim() != 2 or target.shape != (len(output), count):
            raise ValueError(
                f"MixedCriterion expects outputs (batch, columns) and targets (batch, {count}), "
                f"one column per target kind {self.kinds} (an ensemble's outputs: (batch, "
                f"members, columns)); received output "
                f"{tuple(output.shape)} and target {tuple(target.shape)}."
            )
        if output.dtype in (torch.float16, torch.bfloat16):
            output = output.float()  # under autocast: the loss in full precision
        self._to(output.device)
        groups = self._groups(output.shape[1])
        target = target.to(output.dtype)
        valid = ~torch.isnan(target)
        clean = torch.where(valid, target, 0.0)
        column_weights = self._column_weights(weights, clean, len(output), output.shape[1])
        simple = output if not groups else output[:, self._simple_outputs(output.shape[1])]
        scaled = (clean - self.mean) / self.std
        soft = clean * (1 - smoothing) + smoothing / 2 if smoothing else clean
        per_item = torch.where(
            self._regression,
            (simple - scaled) ** 2,
            F.binary_cross_entropy_with_logits(simple, soft, reduction="none"),
        )
        for column, start, size in groups:
            classes = clean[:, column].long().clamp(0, size - 1)
            per_item[:, column] = F.cross_entropy(
                output[:, start : start + size],
                classes,
                self.class_weights,
                reduction="none",
                label_smoothing=smoothing,
            )
        per_item = torch.where(valid, per_item, 0.0)
        if column_weights is not None:
            per_item = per_item * column_weights
        return per_item.sum(0) / valid.sum(0).clamp(min=1)

    def _simple_outputs(self, width: int) -> list[int]:
        """The output column of each target column (the first of a multiclass group)."""
        starts, start = [], 0
        sizes = {column: size for column, _, size in self._groups(width)}
        for column in range(len(self.kinds)):
            starts.append(start)
            start += sizes.get(column, 1)
        return starts

    def _column_weights(
        self, weights: Tensor | None, target: Tensor, batch: int, width: int
    ) -> Tensor | None:
        if weights is None:
            return None
        count = len(self.kinds)
        weights = weights.to(target.dtype)
        if weights.dim() == 1 and len(weights) == batch:
            return weights.reshape(-1, 1)
        if weights.dim() == 2 and len(weights) == batch and weights.shape[1] in (1, count):
            return weights
        if weights.dim() == 2 and len(weights) == batch and weights.shape[1] == width:
            per_column = weights[:, self._simple_outputs(width)].clone()
            for column, start, size in self._groups(width):
                classes = target[:, column].long().clamp(0, size - 1).unsqueeze(1)
                per_column[:, column] = weights[:, start : start + size].gather(1, classes)[:, 0]
            return per_column
        raise ValueError(
            f"MixedCriterion: weights must have shape ({batch},) or ({batch}, 1) (per sample), "
            f"({batch}, {count}) (per target column) or ({batch}, {width}) (per output column); "
            f"received {tuple(weights.shape)}."
        )

    def both(
        self, output: Tensor, target: Tensor, weights: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return the scaled and the unscaled loss, from one computation.

        The unscaled MSE of a regression column is its scaled MSE times the column's variance:
        `((o * std + mean) - y) ** 2 == std ** 2 * (o - (y - mean) / std) ** 2`. With
        `smoothing`, the classification columns are computed twice: smoothed, then not.
        """
        losses = self.columns(output, target, weights)
        if not self.smoothing:
            return losses.mean(), (losses * self.std**2).mean()
        smoothed = self.columns(output, target, weights, self.smoothing)
        return smoothed.mean(), (losses * self.std**2).mean()

    def __call__(
        self, output: Tensor, target: Tensor, weights: Tensor | None = None, unscaled: bool = False
    ) -> Tensor:
        """Return the mean loss over the target columns: scaled, or with `unscaled=True` not."""
        if unscaled:
            return (self.columns(output, target, weights) * self.std**2).mean()
        return self.columns(output, target, weights, self.smoothing).mean()

    def postproc(self, pred: Tensor) -> Tensor:
        """Turn raw outputs into predictions: sigmoid, softmax, and un-scaling of regressions."""
        pred = pred.reshape(-1, 1) if pred.dim() == 1 else pred
        self._to(pred.device)
        groups = self._groups(pred.shape[1])
        simple = pred if not groups else pred[:, self._simple_outputs(pred.shape[1])]
        result = torch.where(self._regression, simple * self.std + self.mean, simple.sigmoid())
        if not groups:
            return result
        parts, start = [], 0
        for column, first, size in groups:
            parts += [result[:, start:column], pred[:, first : first + size].softmax(1)]
            start = column + 1
        return torch.cat([*parts, result[:, start:]], 1)

    def state_dict(self) -> dict[str, Any]:
        """Return the kinds and scaling constants (tensors and plain data), for files."""
        return {
            "kinds": list(self.kinds),
            "mean": self.mean.cpu(),
            "std": self.std.cpu(),
            "class_weights": None if self.class_weights is None else self.class_weights.cpu(),
            "smoothing": self.smoothing,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MixedCriterion:
        """Return the criterion `state_dict` describes (as saved with a model)."""
        return cls(
            kinds=state["kinds"],
            scale=[state["mean"].tolist(), state["std"].tolist()],
            class_weights=state.get("class_weights"),
            smoothing=state.get("smoothing", 0.0),
        )

    def __repr__(self) -> str:
        return f"MixedCriterion(kinds={self.kinds})"


def _kinds_of(flags: Sequence[int] | None) -> list[str | int]:
    try:
        return [REGRESSION if int(flag) else BINARY for flag in flags or ()]
    except (TypeError, ValueError):
        raise ValueError(
            f"MixedCriterion: `regression_flags` must be 1 or 0 per target column; received "
            f"{flags!r}."
        ) from None


def _check_kinds(kinds: Sequence[Any]) -> list[str | int]:
    checked: list[str | int] = []
    for kind in kinds:
        if isinstance(kind, bool) or not (
            kind in (REGRESSION, BINARY, CLASSES) or (isinstance(kind, int) and kind >= 2)
        ):
            raise ValueError(
                f"MixedCriterion: each kind must be 'regression', 'binary', 'classes' or a "
                f"number of classes >= 2; received {kind!r} in {list(kinds)!r}."
            )
        checked.append(kind)
    if not checked:
        raise ValueError("MixedCriterion needs at least one target column; received none.")
    if checked.count(CLASSES) > 1:
        raise ValueError(
            "MixedCriterion: only one column may be 'classes' (K read from the output's "
            f"width); give the others their number of classes. Received {checked!r}."
        )
    return checked


def _scale_of(targets: np.ndarray, regression: np.ndarray) -> list[list[float]]:
    """`[mean, std]` of the regression columns (NaN left out; 0 and 1 elsewhere)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: handled below
        mean = np.nan_to_num(np.nanmean(targets, axis=0), nan=0.0)
        std = np.nan_to_num(np.nanstd(targets, axis=0), nan=1.0)
    std[std == 0] = 1.0
    return [np.where(regression, mean, 0.0).tolist(), np.where(regression, std, 1.0).tolist()]
