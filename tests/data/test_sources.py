"""Tests of `kiln.data.sources`: what `fit`, `evaluate` and `predict` accept as data."""

import math
from collections import namedtuple

import numpy as np
import pytest
import torch
from torch.utils.data import (
    DataLoader,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
    TensorDataset,
)

from kiln.data.in_memory import Data, split
from kiln.data.sources import (
    DEFAULT_BATCH_SIZE,
    as_batches,
    hold_out,
    iterate_inputs,
    num_batches,
    set_epoch,
)

Pair = namedtuple("Pair", ["image", "mask"])

ACCEPTED = (
    r"must be a kiln\.Data, a torch DataLoader, a torch Dataset, a Hugging Face "
    r"`datasets\.Dataset`, a tensor or numpy array"
)


class _Stream(IterableDataset):
    """An iterable dataset of `n` scalars, without a length."""

    def __init__(self, n: int = 5) -> None:
        self.n = n

    def __iter__(self):
        return iter(torch.arange(self.n, dtype=torch.float32))


class _EpochSampler(Sampler[int]):
    """A sampler with `set_epoch`, like `DistributedSampler`, that records the epochs it is told."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.epochs: list[int] = []

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


class _EpochBatchSampler(_EpochSampler):
    """A batch sampler with `set_epoch`, yielding batches of two indices."""

    def __iter__(self):
        return iter([[i, i + 1] for i in range(0, self.n, 2)])


# as_batches


@pytest.mark.parametrize(
    "data",
    [Data(torch.zeros(4)), DataLoader(TensorDataset(torch.zeros(4)))],
    ids=["Data", "DataLoader"],
)
@pytest.mark.parametrize("shuffle", [False, True])
def test_as_batches_returns_data_and_loaders_as_they_are(data, shuffle):
    """A `Data` or a `DataLoader` is returned unchanged (not even re-shuffled)."""
    assert as_batches(data, "train", None, shuffle=shuffle) is data


@pytest.mark.parametrize(
    "data",
    [
        torch.zeros(40, 2),
        np.zeros((40, 2)),
        (torch.zeros(40, 2), torch.zeros(40)),
        [np.zeros((40, 2)), torch.zeros(40), np.zeros(40)],
    ],
    ids=["tensor", "array", "tuple", "list"],
)
@pytest.mark.parametrize("shuffle", [False, True])
def test_as_batches_wraps_raw_tensors_in_data(data, shuffle):
    """Tensors, arrays and tuples of them become a `Data` of 32 samples per batch."""
    batches = as_batches(data, "train", None, shuffle=shuffle)
    assert isinstance(batches, Data)
    assert batches.batch_size == DEFAULT_BATCH_SIZE == 32
    assert batches.shuffle is shuffle
    assert len(batches) == 2


def test_as_batches_applies_batch_size_to_raw_tensors():
    """A given `batch_size` is the `Data`'s batch size."""
    batches = as_batches((torch.zeros(10, 2), torch.zeros(10)), "train", 4, shuffle=False)
    assert batches.batch_size == 4
    assert [len(y) for _, y in batches] == [4, 4, 2]


@pytest.mark.parametrize(("batch_size", "expected"), [(None, DEFAULT_BATCH_SIZE), (8, 8)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_as_batches_wraps_a_dataset_in_a_loader(batch_size, expected, shuffle):
    """A map-style Dataset becomes a DataLoader with the batch size and shuffling asked for."""
    batches = as_batches(TensorDataset(torch.arange(40)), "train", batch_size, shuffle=shuffle)
    assert isinstance(batches, DataLoader)
    assert batches.batch_size == expected
    assert isinstance(batches.sampler, RandomSampler if shuffle else SequentialSampler)


def test_as_batches_wraps_an_iterable_dataset_without_shuffle():
    """An iterable Dataset (no length) becomes a DataLoader when not shuffled."""
    batches = as_batches(_Stream(5), "val", 2, shuffle=False)
    assert isinstance(batches, DataLoader)
    assert [len(b) for b in batches] == [2, 2, 1]


def test_as_batches_accepts_an_iterable_dataset_for_training():
    """An iterable Dataset as training data (shuffle=True) becomes a DataLoader in its order."""
    batches = as_batches(_Stream(5), "train", 2, shuffle=True)
    assert [len(b) for b in batches] == [2, 2, 1]


@pytest.mark.parametrize(
    "data",
    [Data(torch.zeros(4)), DataLoader(TensorDataset(torch.zeros(4)))],
    ids=["Data", "DataLoader"],
)
def test_as_batches_rejects_batch_size_for_data_with_its_own(data):
    """`batch_size` with a `Data` or a `DataLoader` is a ValueError pointing at the fix."""
    with pytest.raises(ValueError, match=r"`batch_size=16` cannot apply to `train`.*its own"):
        as_batches(data, "train", 16, shuffle=True)


@pytest.mark.parametrize("batch_size", [0, -1, True, 2.5])
@pytest.mark.parametrize(
    "data",
    [(torch.zeros(10), torch.zeros(10)), TensorDataset(torch.zeros(10))],
    ids=["tuple", "Dataset"],
)
def test_as_batches_rejects_invalid_batch_size(data, batch_size):
    """A batch size that is not a positive int is a ValueError showing the value."""
    with pytest.raises(
        ValueError, match=rf"`batch_size` must be a positive integer; received {batch_size!r}"
    ):
        as_batches(data, "train", batch_size, shuffle=True)


@pytest.mark.parametrize("data", [(), []], ids=["tuple", "list"])
def test_as_batches_rejects_an_empty_tuple(data):
    """An empty tuple or list is a ValueError showing the expected `(X, Y)`."""
    with pytest.raises(ValueError, match=r"`train` is an empty (tuple|list); pass `\(X, Y\)`"):
        as_batches(data, "train", None, shuffle=True)


def test_as_batches_rejects_an_empty_dataset():
    """An empty map-style Dataset is a ValueError naming the argument."""
    with pytest.raises(ValueError, match=r"`val` is an empty dataset"):
        as_batches(TensorDataset(torch.zeros(0)), "val", None, shuffle=False)


def test_as_batches_rejects_a_loader_over_an_empty_dataset():
    """A DataLoader over an empty Dataset is a ValueError naming the argument."""
    with pytest.raises(ValueError, match=r"`train` is a DataLoader over an empty dataset"):
        as_batches(DataLoader(TensorDataset(torch.zeros(0))), "train", None, shuffle=False)


def test_as_batches_accepts_a_loader_over_an_iterable_dataset():
    """A DataLoader over an iterable Dataset is not asked for its (unknown) length."""
    batches = DataLoader(_Stream(3))
    assert as_batches(batches, "train", None, shuffle=True) is batches


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"x": torch.zeros(3)}, r"a dict\. Fix: for a model with keyword inputs"),
        ("data.csv", r"the string 'data\.csv'\. kiln does not read files: load the numbers"),
        (3, r"an int\. Fix: convert it with `torch\.as_tensor\(value\)`"),
        ([[1.0, 2.0]], r"a list\. Fix: `torch\.tensor\(values\)` or `np\.asarray\(values\)`"),
        (None, r"None\.$"),
    ],
)
def test_as_batches_rejects_other_kinds_listing_the_accepted_ones(data, kind):
    """Dicts, strings, ints and lists are a TypeError listing the kinds, and how to convert."""
    with pytest.raises(TypeError, match=rf"`train` {ACCEPTED}.*; received {kind}"):
        as_batches(data, "train", None, shuffle=True)


class DataFrame:
    """A stand-in for `pandas.DataFrame` (pandas is not a dependency): it has `to_numpy`."""

    __module__ = "pandas.core.frame"

    def to_numpy(self) -> np.ndarray:
        return np.zeros((3, 2))


@pytest.mark.parametrize(
    ("data", "part", "what"),
    [
        ((torch.zeros(3), "labels"), "`Y`", r"the string 'labels'\. Fix: give the values"),
        (([[1.0], [2.0]], torch.zeros(2)), "`X`", r"a list\. Fix: `torch\.tensor\(values\)`"),
        ((DataFrame(), torch.zeros(3)), "`X`", r"a pandas DataFrame\. Fix: `\.to_numpy\(\)` it"),
        ((torch.zeros(3), torch.ones(3), [1, 2, 3]), "`Y`", r"a list\."),
        (
            ((torch.zeros(3), torch.zeros(3)), torch.zeros(3)),
            "`X`",
            r"a tuple of tensors\. Fix: for a model with several inputs, give a torch Dataset "
            r"whose items are `\(\(x1, x2\), y\)`",
        ),
    ],
)
def test_as_batches_names_the_part_of_x_y_that_is_no_tensor(data, part, what):
    """Lists, strings or a DataFrame inside `(X, Y)` name the part, its type and the fix."""
    kind = type(data).__name__
    match = rf"`data` is a {kind} of {len(data)} items, whose {part} is {what}"
    with pytest.raises(TypeError, match=match) as info:
        as_batches(data, "data", None, shuffle=False)
    assert "must be a tensor or numpy array with one row per sample" in str(info.value)


def test_predict_and_data_name_a_dataframe_and_its_fix():
    """`predict(df)` and `Data((df, y))` say what they received and how to convert it."""
    with pytest.raises(TypeError, match=r"received a pandas DataFrame\. Fix: `\.to_numpy\(\)`"):
        iterate_inputs(DataFrame(), None)
    with pytest.raises(TypeError, match=r"`tensors\[0\]` .*; received a pandas DataFrame"):
        Data((DataFrame(), torch.zeros(3)))


# hold_out


def test_hold_out_gives_the_same_split_every_call():
    """Holding out twice gives the same parts, equal to `split(train, 0.9, 0.1, seed=0)`."""
    data = (torch.arange(50), torch.arange(50) * 2)
    first, again = hold_out(data, 0.1), hold_out(data, 0.1)
    expected_train, expected_val = split(data, 0.9, 0.1, seed=0)
    assert torch.equal(first[1][0], again[1][0])
    assert torch.equal(first[0][0], expected_train[0])
    assert torch.equal(first[1][1], expected_val[1])
    assert [len(part[0]) for part in first] == [45, 5]


def test_hold_out_of_data_keeps_train_shuffled_and_val_in_order():
    """The training part of a shuffled `Data` stays shuffled; the validation part is not."""
    data = Data((torch.zeros(20, 2), torch.arange(20)), batch_size=4, shuffle=True, seed=1)
    train, val = hold_out(data, 0.25)
    assert isinstance(train, Data)
    assert isinstance(val, Data)
    assert (train.shuffle, val.shuffle, data.shuffle) == (True, False, True)
    assert (train.num_samples, val.num_samples) == (15, 5)
    assert val.batch_size == 4
    assert torch.equal(torch.cat([y for _, y in val]), val.tensors[1])


def test_hold_out_of_a_dataset_gives_subsets():
    """A Dataset is held out as two disjoint `Subset`s covering it."""
    train, val = hold_out(TensorDataset(torch.arange(30)), 0.2)
    assert isinstance(train, Subset)
    assert isinstance(val, Subset)
    assert sorted([*train.indices, *val.indices]) == list(range(30))
    assert len(val) == 6


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, -0.1, 1.5, math.nan])
def test_hold_out_rejects_fractions_outside_zero_one(fraction):
    """A fraction that is not strictly between 0 and 1 is a ValueError showing it."""
    with pytest.raises(ValueError, match=rf"between 0 and 1; received {fraction!r}"):
        hold_out((torch.zeros(10),), fraction)


def test_hold_out_rejects_a_loader_and_names_the_fix():
    """A DataLoader cannot be split: TypeError suggesting `kiln.split` on the dataset."""
    with pytest.raises(TypeError, match=r"is a DataLoader.*kiln\.split\(dataset, 0\.9, 0\.1\)"):
        hold_out(DataLoader(TensorDataset(torch.zeros(10))), 0.1)


# set_epoch and num_batches


def test_set_epoch_sets_the_epoch_of_data():
    """`set_epoch` on a `Data` chooses the pass its next iteration follows."""
    data = Data(torch.zeros(10), shuffle=True, seed=0)
    set_epoch(data, 3)
    assert data.epoch == 3


def test_set_epoch_forwards_to_the_loader_sampler():
    """`set_epoch` on a DataLoader calls its sampler's `set_epoch` (as a DistributedSampler)."""
    sampler = _EpochSampler(6)
    batches = DataLoader(TensorDataset(torch.zeros(6)), batch_size=2, sampler=sampler)
    set_epoch(batches, 2)
    set_epoch(batches, 3)
    assert sampler.epochs == [2, 3]


def test_set_epoch_forwards_to_the_loader_batch_sampler():
    """`set_epoch` on a DataLoader also reaches a batch sampler defining `set_epoch`."""
    batch_sampler = _EpochBatchSampler(6)
    batches = DataLoader(TensorDataset(torch.zeros(6)), batch_sampler=batch_sampler)
    set_epoch(batches, 5)
    assert batch_sampler.epochs == [5]


@pytest.mark.parametrize(
    "batches",
    [DataLoader(TensorDataset(torch.zeros(4)), shuffle=True), [torch.zeros(2)], iter([])],
    ids=["plain-loader", "list", "iterator"],
)
def test_set_epoch_ignores_data_without_epochs(batches):
    """Loaders whose samplers have no `set_epoch`, and other iterables, are left alone."""
    set_epoch(batches, 1)


@pytest.mark.parametrize(
    ("batches", "expected"),
    [
        (Data(torch.zeros(10), batch_size=4), 3),
        (DataLoader(TensorDataset(torch.zeros(10)), batch_size=4, drop_last=True), 2),
        ([torch.zeros(1)] * 5, 5),
        (DataLoader(_Stream(5), batch_size=2), None),
        ((torch.zeros(1) for _ in range(3)), None),
    ],
    ids=["Data", "DataLoader", "list", "iterable-dataset", "generator"],
)
def test_num_batches_is_the_length_or_none(batches, expected):
    """The number of batches is the iterable's length, or None when it has none."""
    assert num_batches(batches) == expected


# iterate_inputs


def test_iterate_inputs_slices_a_tensor_in_batches_of_256():
    """A tensor is sliced into batches of 256 samples by default (300 = 256 + 44)."""
    x = torch.arange(300)
    batches = list(iterate_inputs(x, None))
    assert [len(b) for b in batches] == [256, 44]
    assert torch.equal(torch.cat(batches), x)


def test_iterate_inputs_slices_an_array_with_the_batch_size_given():
    """A numpy array is converted (float64 to float32) and sliced by the given batch size."""
    batches = list(iterate_inputs(np.zeros((10, 2)), 4))
    assert [tuple(b.shape) for b in batches] == [(4, 2), (4, 2), (2, 2)]
    assert batches[0].dtype == torch.float32


@pytest.mark.parametrize("kind", [tuple, list])
def test_iterate_inputs_wraps_several_inputs_as_one_item(kind):
    """A tuple or list of tensors is several model inputs: each batch is `((x1, x2),)`."""
    x1, x2 = torch.arange(5), torch.arange(5) * 10
    batches = list(iterate_inputs(kind([x1, x2]), 2))
    assert len(batches) == 3
    for start, batch in zip(range(0, 5, 2), batches, strict=True):
        assert isinstance(batch, tuple)
        assert len(batch) == 1
        (inputs,) = batch
        assert isinstance(inputs, kind)
        assert torch.equal(inputs[0], x1[start : start + 2])
        assert torch.equal(inputs[1], x2[start : start + 2])


def test_iterate_inputs_slices_a_dict_per_key():
    """A dict of tensors (keyword inputs) is sliced key by key and not wrapped."""
    inputs = {"ids": torch.arange(5), "mask": np.ones((5, 2))}
    batches = list(iterate_inputs(inputs, 3))
    assert [set(b) for b in batches] == [{"ids", "mask"}] * 2
    assert torch.equal(batches[1]["ids"], torch.tensor([3, 4]))
    assert batches[1]["mask"].shape == (2, 2)


@pytest.mark.parametrize(
    "inputs",
    [
        (torch.zeros(3), torch.zeros(4)),
        {"a": torch.zeros(3), "b": np.zeros(4)},
        ([torch.zeros(3)], {"c": torch.zeros(4)}),
    ],
    ids=["tuple", "dict", "nested"],
)
def test_iterate_inputs_rejects_unequal_lengths(inputs):
    """Inputs of different lengths are a ValueError listing them, before any batch."""
    with pytest.raises(ValueError, match=r"same length; received lengths \[3, 4\]"):
        iterate_inputs(inputs, None)


@pytest.mark.parametrize("inputs", ["text", [1.0, 2.0], {"x": [1, 2]}, 3])
def test_iterate_inputs_rejects_non_tensor_inputs(inputs):
    """Strings, numbers and lists of numbers are a TypeError naming the accepted inputs."""
    with pytest.raises(TypeError, match=r"`predict` takes tensors or arrays"):
        iterate_inputs(inputs, None)


@pytest.mark.parametrize(
    "data",
    [Data((torch.zeros(4), torch.zeros(4))), DataLoader(TensorDataset(torch.zeros(4)))],
    ids=["Data", "DataLoader"],
)
def test_iterate_inputs_passes_data_and_loaders_through(data):
    """A `Data` or DataLoader is returned as is (its batches are in the training format)."""
    assert iterate_inputs(data, None) is data


def test_iterate_inputs_loads_a_dataset_in_order():
    """A Dataset becomes an unshuffled DataLoader with the given batch size."""
    batches = iterate_inputs(TensorDataset(torch.arange(5)), 2)
    assert isinstance(batches, DataLoader)
    assert torch.equal(torch.cat([x for (x,) in batches]), torch.arange(5))


@pytest.mark.parametrize("batch_size", [0, -1, True, 2.5])
@pytest.mark.parametrize(
    "inputs",
    [torch.zeros(10), (torch.zeros(10), torch.zeros(10)), TensorDataset(torch.zeros(10))],
    ids=["tensor", "tuple", "Dataset"],
)
def test_iterate_inputs_rejects_invalid_batch_size(inputs, batch_size):
    """A batch size that is not a positive int is a ValueError at the call, as for `Data`."""
    with pytest.raises(
        ValueError, match=rf"`batch_size` must be a positive integer; received {batch_size!r}"
    ):
        iterate_inputs(inputs, batch_size)


def test_iterate_inputs_keeps_namedtuple_inputs():
    """A namedtuple of inputs is sliced into namedtuples of the same type."""
    batches = list(iterate_inputs(Pair(torch.zeros(4), torch.ones(4)), 2))
    assert isinstance(batches[0][0], Pair)


def test_fit_evaluate_predict_take_a_numpy_batch_size():
    """`batch_size=np.int64(8)` works in `fit`, `evaluate` and `predict`."""
    import kiln

    X, Y = torch.randn(16, 2), torch.randn(16, 1)
    trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu", progress=False)
    size = np.int64(8)
    trainer.fit((X, Y), epochs=np.int64(1), batch_size=size)
    assert trainer.state.step == 2
    assert isinstance(trainer.evaluate((X, Y), batch_size=size).loss, float)
    assert trainer.predict(X, batch_size=size).shape == (16, 1)
    assert len(as_batches((X, Y), "train", size, shuffle=False)) == 2
