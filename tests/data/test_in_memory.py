"""Tests of `kiln.data.in_memory`: `Data`, `split`, `split_indices`, `loader`, `find_collate_fn`."""

import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset, TensorDataset

import kiln
from kiln.data.in_memory import Data, as_tensor, find_collate_fn, loader, split, split_indices


def _xy(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs whose first column is the sample index, and targets equal to the index."""
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    return x, torch.arange(n)


def _visited(data: Data) -> torch.Tensor:
    """The sample indices of one pass over `Data((x, y))` built by `_xy`, in order."""
    return torch.cat([y for _, y in data])


class _CollatingDataset(Dataset):
    """A dataset with its own `collate_fn` method, which tags the batch."""

    def __init__(self, n: int = 6) -> None:
        self.values = torch.arange(n, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.values[index]

    def collate_fn(self, items: list[torch.Tensor]) -> tuple[str, torch.Tensor]:
        return "collated", torch.stack(items)


# as_tensor


def test_as_tensor_returns_a_tensor_unchanged():
    """A tensor is returned as is, without a copy or a dtype change."""
    tensor = torch.arange(3, dtype=torch.float64)
    assert as_tensor(tensor) is tensor


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        (np.zeros(3, dtype=np.float64), torch.float32),
        (np.zeros(3, dtype=np.float16), torch.float32),
        (np.zeros(3, dtype=np.float32), torch.float32),
        (np.zeros(3, dtype=np.int64), torch.int64),
        (np.zeros(3, dtype=np.int32), torch.int32),
        (np.zeros(3, dtype=bool), torch.bool),
    ],
)
def test_as_tensor_converts_numpy_floats_to_float32_and_keeps_other_dtypes(array, dtype):
    """Numpy floats become float32 (the model's dtype); integers and booleans keep theirs."""
    assert as_tensor(array).dtype == dtype


def test_as_tensor_accepts_a_non_contiguous_array():
    """A strided numpy view is converted with the right values."""
    array = np.arange(12).reshape(3, 4).T
    assert torch.equal(as_tensor(array), torch.as_tensor(array.copy()))


@pytest.mark.parametrize("value", [[1.0, 2.0], 3, "abc", None])
def test_as_tensor_rejects_other_types(value):
    """Anything but a tensor or an array is a TypeError naming the argument and the type."""
    with pytest.raises(TypeError, match=r"`inputs` must be a torch\.Tensor or a numpy array"):
        as_tensor(value, "inputs")


def test_as_tensor_accepts_a_read_only_integer_array():
    """A read-only integer array (a memory map, a broadcast view) converts without a warning."""
    array = np.arange(4)
    array.flags.writeable = False
    assert torch.equal(as_tensor(array), torch.arange(4))


# Data: what a batch looks like


def test_data_of_a_tuple_yields_tuples_of_contiguous_slices():
    """`Data((X, Y))` without shuffle yields `(X[s:e], Y[s:e])` for consecutive slices."""
    x, y = _xy(10)
    batches = list(Data((x, y), batch_size=4))
    bounds = [(0, 4), (4, 8), (8, 10)]
    assert len(batches) == len(bounds)
    for batch, (start, stop) in zip(batches, bounds, strict=True):
        assert isinstance(batch, tuple)
        assert torch.equal(batch[0], x[start:stop])
        assert torch.equal(batch[1], y[start:stop])


def test_data_of_a_list_yields_tuples():
    """A list `[X, W, Y]` is read like a tuple and yields 3-tuples."""
    x, y = _xy(6)
    batch = next(iter(Data([x, torch.ones(6), y], batch_size=4)))
    assert isinstance(batch, tuple)
    assert len(batch) == 3


def test_data_of_a_single_tensor_yields_tensors():
    """A bare tensor yields tensor batches, not 1-tuples."""
    x, _ = _xy(10)
    batches = list(Data(x, batch_size=4))
    assert all(isinstance(batch, torch.Tensor) for batch in batches)
    assert torch.equal(torch.cat(batches), x)


def test_data_of_a_one_tuple_yields_one_tuples():
    """A tuple of one tensor yields tuples of one tensor, keeping the format given."""
    x, _ = _xy(4)
    batch = next(iter(Data((x,), batch_size=4)))
    assert isinstance(batch, tuple)
    assert len(batch) == 1


def test_data_converts_numpy_float64_to_float32_and_keeps_integers():
    """Numpy float64 inputs become float32; integer targets stay integer."""
    data = Data((np.zeros((5, 2)), np.arange(5)), batch_size=5)
    x, y = next(iter(data))
    assert x.dtype == torch.float32
    assert y.dtype == torch.int64


@pytest.mark.parametrize(
    ("num_samples", "batch_size", "drop_last", "expected"),
    [
        (10, 4, False, 3),
        (10, 4, True, 2),
        (8, 4, False, 2),
        (8, 4, True, 2),
        (3, 4, False, 1),
        (3, 4, True, 0),
        (10, 1, False, 10),
    ],
)
def test_data_len_is_the_number_of_batches(num_samples, batch_size, drop_last, expected):
    """`len` is ceil(N / B), or floor(N / B) with `drop_last`, and matches the pass."""
    data = Data(torch.zeros(num_samples), batch_size=batch_size, drop_last=drop_last)
    assert len(data) == expected
    assert len(list(data)) == expected


def test_data_drop_last_leaves_out_the_short_batch():
    """With `drop_last` every batch is full and the tail samples are not visited."""
    x, y = _xy(10)
    batches = list(Data((x, y), batch_size=4, drop_last=True))
    assert [len(b[1]) for b in batches] == [4, 4]
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(8))


def test_data_batch_size_change_takes_effect_at_the_next_pass():
    """A new `batch_size` changes `len` at once and the batches of the following pass."""
    data = Data(torch.zeros(10), batch_size=4)
    assert [len(b) for b in data] == [4, 4, 2]
    data.batch_size = 5
    assert len(data) == 2
    assert [len(b) for b in data] == [5, 5]


def test_data_batch_size_change_during_a_pass_waits_for_the_next():
    """Changing `batch_size` in the middle of a pass leaves that pass's batches unchanged."""
    data = Data(torch.zeros(10), batch_size=4)
    sizes = []
    for batch in data:
        sizes.append(len(batch))
        data.batch_size = 3
    assert sizes == [4, 4, 2]
    assert [len(b) for b in data] == [3, 3, 3, 1]


def test_data_exposes_samples_device_and_repr():
    """`num_samples`, `device` and `repr` describe the data and its options."""
    data = Data((torch.zeros(7, 2), torch.zeros(7)), batch_size=3, shuffle=True)
    assert data.num_samples == 7
    assert data.device == torch.device("cpu")
    assert repr(data) == "Data((7, 2), (7,), batch_size=3, shuffle=True, drop_last=False)"


# Data: shuffling


def test_data_without_shuffle_has_no_order():
    """`order()` is None when not shuffling."""
    assert Data(torch.zeros(5)).order() is None


def test_data_shuffles_the_first_pass_too():
    """With shuffle, the first pass is already a permutation other than the original order."""
    data = Data(_xy(100), batch_size=16, shuffle=True, seed=0)
    visited = _visited(data)
    assert not torch.equal(visited, torch.arange(100))
    assert torch.equal(visited.sort().values, torch.arange(100))


@pytest.mark.parametrize("drop_last", [False, True])
def test_data_shuffled_pass_visits_every_sample_at_most_once(drop_last):
    """Each shuffled pass visits every sample exactly once (all but the dropped tail)."""
    data = Data(_xy(50), batch_size=8, shuffle=True, seed=3, drop_last=drop_last)
    for _ in range(3):
        visited = _visited(data)
        assert len(visited) == (48 if drop_last else 50)
        assert len(visited.unique()) == len(visited)


def test_data_shuffled_batches_are_gathers_of_the_pass_order():
    """A shuffled batch is `X[perm[s:e]]` with `perm = data.order()` of that pass."""
    x, y = _xy(20)
    data = Data((x, y), batch_size=6, shuffle=True, seed=5)
    data.set_epoch(2)
    perm = data.order()
    assert perm is not None
    batches = list(data)
    for start, (bx, by) in zip(range(0, 20, 6), batches, strict=True):
        index = perm[start : start + 6]
        assert torch.equal(bx, x[index])
        assert torch.equal(by, y[index])


def test_data_order_is_reproducible_for_the_same_seed_and_pass():
    """Two `Data` with the same seed visit the same order at the same pass number."""
    first = Data(_xy(30), batch_size=7, shuffle=True, seed=11)
    second = Data(_xy(30), batch_size=7, shuffle=True, seed=11)
    first.set_epoch(4)
    second.set_epoch(4)
    assert torch.equal(_visited(first), _visited(second))


def test_data_order_differs_between_passes():
    """Consecutive passes visit the samples in different orders."""
    data = Data(_xy(30), batch_size=7, shuffle=True, seed=11)
    orders = [_visited(data) for _ in range(3)]
    assert not torch.equal(orders[0], orders[1])
    assert not torch.equal(orders[1], orders[2])


def test_data_order_differs_between_seeds():
    """Two seeds give two different orders for the same pass."""
    first = Data(_xy(30), shuffle=True, seed=1)
    second = Data(_xy(30), shuffle=True, seed=2)
    assert not torch.equal(_visited(first), _visited(second))


def test_data_set_epoch_replays_a_pass():
    """`set_epoch(e)` makes the next pass repeat the order pass `e` had (as on resume)."""
    data = Data(_xy(30), batch_size=7, shuffle=True, seed=11)
    orders = [_visited(data) for _ in range(3)]
    data.set_epoch(1)
    assert data.epoch == 1
    assert torch.equal(_visited(data), orders[1])


def test_data_default_seed_is_reproducible_after_seed_everything():
    """With `seed=None` the order is reproducible after `kiln.seed_everything`."""
    kiln.seed_everything(7)
    first = _visited(Data(_xy(40), shuffle=True))
    kiln.seed_everything(7)
    second = _visited(Data(_xy(40), shuffle=True))
    kiln.seed_everything(8)
    third = _visited(Data(_xy(40), shuffle=True))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_data_complete_pass_advances_epoch():
    """A complete pass adds one to `epoch`; a pass left early does not."""
    data = Data(torch.zeros(10), batch_size=4)
    assert data.epoch == 0
    list(data)
    list(data)
    assert data.epoch == 2
    next(iter(data))
    assert data.epoch == 2


def test_data_batches_without_indexing_single_samples(monkeypatch):
    """An unshuffled pass takes one slice per tensor and batch, never one sample at a time."""
    keys = []
    getitem = torch.Tensor.__getitem__

    def spy(self, key):
        keys.append(key)
        return getitem(self, key)

    monkeypatch.setattr(torch.Tensor, "__getitem__", spy)
    batches = list(Data(_xy(10), batch_size=4))
    assert len(keys) == 2 * len(batches)
    assert all(isinstance(key, slice) for key in keys)


def test_data_shuffled_batches_are_one_gather_per_tensor(monkeypatch):
    """A shuffled pass does one `index_select` per tensor and batch and indexes no sample."""
    keys, gathers = [], []
    getitem, index_select = torch.Tensor.__getitem__, torch.Tensor.index_select

    def spy_getitem(self, key):
        keys.append(key)
        return getitem(self, key)

    def spy_index_select(self, dim, index):
        gathers.append(len(index))
        return index_select(self, dim, index)

    monkeypatch.setattr(torch.Tensor, "__getitem__", spy_getitem)
    monkeypatch.setattr(torch.Tensor, "index_select", spy_index_select)
    batches = list(Data(_xy(10), batch_size=4, shuffle=True, seed=0))
    assert gathers == [4, 4, 4, 4, 2, 2]
    assert len(batches) == 3
    assert all(isinstance(key, slice) for key in keys)


# Data: subset and to


def test_data_subset_keeps_options_and_picks_samples():
    """`subset` returns a `Data` over the given samples with the same options and seed."""
    x, y = _xy(10)
    data = Data((x, y), batch_size=3, shuffle=True, drop_last=True, seed=9)
    part = data.subset([7, 2, 5, 0])
    assert (part.batch_size, part.shuffle, part.drop_last, part.seed) == (3, True, True, 9)
    assert torch.equal(part.tensors[1], torch.tensor([7, 2, 5, 0]))
    assert torch.equal(part.tensors[0], x[[7, 2, 5, 0]])


@pytest.mark.parametrize(
    "indices",
    [np.array([1, 3]), torch.tensor([1, 3]), [1, 3], (1, 3)],
    ids=lambda value: type(value).__name__,
)
def test_data_subset_accepts_arrays_tensors_and_sequences(indices):
    """`subset` takes numpy arrays, tensors, lists and tuples of indices."""
    part = Data(torch.arange(5.0), batch_size=2).subset(indices)
    assert torch.equal(next(iter(part)), torch.tensor([1.0, 3.0]))


def test_data_subset_of_a_single_tensor_yields_tensors():
    """A subset of a bare-tensor `Data` still yields tensor batches."""
    part = Data(torch.arange(5.0), batch_size=2).subset([0, 1])
    assert isinstance(next(iter(part)), torch.Tensor)


def test_data_to_keeps_options_and_values():
    """`to("cpu")` returns a `Data` with the same tensors and options."""
    x, y = _xy(6)
    data = Data((x, y), batch_size=4, shuffle=True, drop_last=True, seed=3)
    moved = data.to("cpu")
    assert isinstance(moved, Data)
    assert (moved.batch_size, moved.shuffle, moved.drop_last, moved.seed) == (4, True, True, 3)
    assert moved.device == torch.device("cpu")
    assert torch.equal(moved.tensors[0], x)
    assert torch.equal(_visited(moved), _visited(data))


def test_data_to_moves_the_tensors():
    """`to(device)` puts every tensor on that device (the meta device stands for a GPU)."""
    moved = Data(_xy(6)).to("meta")
    assert moved.device == torch.device("meta")
    assert all(t.is_meta for t in moved.tensors)


# Data: errors


def test_data_rejects_unequal_lengths():
    """Tensors of different lengths are a ValueError listing the lengths."""
    with pytest.raises(ValueError, match=r"received lengths \[4, 3\]"):
        Data((torch.zeros(4, 2), torch.zeros(3)))


@pytest.mark.parametrize("tensors", [torch.zeros(0, 3), (torch.zeros(0), torch.zeros(0))])
def test_data_rejects_zero_samples(tensors):
    """Tensors of length 0 are a ValueError."""
    with pytest.raises(ValueError, match="received no samples"):
        Data(tensors)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([[1.0, 2.0], [3.0, 4.0]], r"`tensors\[0\]` must be a torch\.Tensor"),
        ((torch.zeros(2), [1, 2]), r"`tensors\[1\]` must be a torch\.Tensor"),
        ({"x": torch.zeros(2)}, r"`Data` takes a tensor.*received dict"),
        ((), r"`Data` takes a tensor.*received tuple"),
        (5, r"`Data` takes a tensor.*received int"),
    ],
)
def test_data_rejects_non_tensor_input(tensors, message):
    """Lists of numbers, dicts, scalars and empty tuples are a TypeError naming the culprit."""
    with pytest.raises(TypeError, match=message):
        Data(tensors)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "4", None])
def test_data_rejects_invalid_batch_size(batch_size):
    """A batch size that is not a positive int is a ValueError showing the value received."""
    with pytest.raises(ValueError, match=f"received {re.escape(repr(batch_size))}"):
        Data(torch.zeros(4), batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_data_batch_size_setter_rejects_invalid_values(batch_size):
    """Setting an invalid `batch_size` later is a ValueError and keeps the old value."""
    data = Data(torch.zeros(4), batch_size=2)
    with pytest.raises(ValueError, match=f"received {re.escape(repr(batch_size))}"):
        data.batch_size = batch_size
    assert data.batch_size == 2


# split_indices and split


@pytest.mark.parametrize(
    ("fractions", "sizes"),
    [
        ((0.75, 0.25), [150, 50]),
        ((0.5, 0.3, 0.2), [100, 60, 40]),
        ((0.8, 0.1, 0.1), [160, 20, 20]),
        ((0.333, 0.333, 0.334), [67, 67, 66]),
    ],
)
def test_split_indices_sizes_round_and_last_takes_the_remainder(fractions, sizes):
    """Part sizes are round(f * N), the last part taking what remains."""
    assert [len(part) for part in split_indices(200, fractions)] == sizes


def test_split_indices_follow_the_numpy_permutation_in_order():
    """The parts are consecutive pieces of `RandomState(seed).permutation(N)` (as PyBlaze)."""
    parts = split_indices(200, (0.5, 0.3, 0.2), seed=42)
    permutation = np.random.RandomState(42).permutation(200)
    np.testing.assert_array_equal(np.concatenate(parts), permutation)
    np.testing.assert_array_equal(parts[1], permutation[100:160])


def test_split_indices_parts_are_disjoint_and_cover_everything():
    """Every index appears in exactly one part."""
    parts = split_indices(97, (0.6, 0.3, 0.1), seed=1)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(97))


def test_split_indices_same_seed_same_split_other_seed_other_split():
    """The same seed gives the same parts; another seed gives other parts."""
    first = split_indices(50, (0.8, 0.2), seed=3)
    again = split_indices(50, (0.8, 0.2), seed=3)
    other = split_indices(50, (0.8, 0.2), seed=4)
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ((0.5, 0.4), r"sum to 1; received \(0\.5, 0\.4\)"),
        ((0.7, 0.7), r"sum to 1; received \(0\.7, 0\.7\)"),
        ((1.2, -0.2), r"between 0 and 1"),
        ((1.0, 0.0), r"between 0 and 1"),
        ((1.0,), r"at least two fractions"),
        ((), r"at least two fractions"),
    ],
)
def test_split_rejects_bad_fractions(fractions, message):
    """Fractions outside (0, 1), not summing to 1, or fewer than two are a ValueError."""
    with pytest.raises(ValueError, match=message):
        split(torch.zeros(10), *fractions)


def test_split_stratify_rejects_labels_of_the_wrong_length():
    """Stratifying with a label count other than the sample count is a ValueError."""
    with pytest.raises(ValueError, match=r"one label per sample \(10\)"):
        split(torch.zeros(10), 0.5, 0.5, stratify=np.zeros(9))


@pytest.mark.parametrize(
    "labels",
    [
        np.repeat([0, 1, 2], [100, 60, 40]),
        torch.tensor([0] * 150 + [1] * 50),
        [3] * 20 + [7] * 177 + [9] * 3,
    ],
    ids=["numpy", "tensor", "list"],
)
def test_split_stratify_keeps_class_proportions(labels):
    """With `stratify`, each part holds each class in the split's proportions (within one)."""
    labels = np.asarray(labels)
    fractions = (0.7, 0.2, 0.1)
    parts = split_indices(len(labels), fractions, seed=0, stratify=labels)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    for part, fraction in zip(parts, fractions, strict=True):
        for label in np.unique(labels):
            expected = fraction * np.sum(labels == label)
            assert abs(np.sum(labels[part] == label) - expected) <= 1


def test_split_stratify_is_reproducible_and_shuffles_within_parts():
    """A stratified split is the same for the same seed, and its parts are not sorted by class."""
    labels = np.repeat([0, 1], 50)
    first = split_indices(100, (0.5, 0.5), seed=2, stratify=labels)
    again = split_indices(100, (0.5, 0.5), seed=2, stratify=labels)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.all(np.diff(labels[first[0]]) >= 0)


def test_split_of_data_returns_data_with_the_same_options():
    """Splitting a `Data` gives `Data` parts with its options and the split's samples."""
    x, y = _xy(200)
    data = Data((x, y), batch_size=16, shuffle=True, seed=4)
    train, val = split(data, 0.75, 0.25, seed=0)
    permutation = np.random.RandomState(0).permutation(200)
    assert all(isinstance(part, Data) for part in (train, val))
    assert (train.batch_size, train.shuffle, val.batch_size, val.shuffle) == (16, True, 16, True)
    assert torch.equal(train.tensors[1], torch.as_tensor(permutation[:150]))
    assert torch.equal(val.tensors[0], x[permutation[150:]])


def test_split_of_a_dataset_returns_subsets():
    """Splitting a torch `Dataset` gives `Subset`s over the split's indices."""
    dataset = TensorDataset(torch.arange(20))
    train, val = split(dataset, 0.8, 0.2, seed=1)
    permutation = np.random.RandomState(1).permutation(20)
    assert isinstance(train, Subset)
    assert train.dataset is dataset
    assert list(train.indices) == permutation[:16].tolist()
    assert list(val.indices) == permutation[16:].tolist()


@pytest.mark.parametrize(
    "values", [torch.arange(10) * 10, np.arange(10) * 10], ids=lambda value: type(value).__name__
)
def test_split_of_a_tensor_or_array_returns_the_same_kind(values):
    """Splitting a tensor gives tensors, splitting an array gives arrays, indexed by the split."""
    parts = split(values, 0.6, 0.4, seed=5)
    permutation = np.random.RandomState(5).permutation(10)
    assert all(type(part) is type(values) for part in parts)
    np.testing.assert_array_equal(np.asarray(parts[0]), permutation[:6] * 10)
    np.testing.assert_array_equal(np.asarray(parts[1]), permutation[6:] * 10)


@pytest.mark.parametrize(
    "dataset",
    [
        (torch.arange(10), torch.arange(10) * 2),
        [np.arange(10), np.arange(10) * 2],
        (np.arange(10), torch.arange(10) * 2),
    ],
    ids=["tuple-of-tensors", "list-of-arrays", "mixed"],
)
def test_split_of_a_tuple_returns_aligned_tuples(dataset):
    """Splitting `(X, Y)` gives `(x, y)` tuples whose rows stay aligned."""
    parts = split(dataset, 0.7, 0.3, seed=0)
    assert [len(part[0]) for part in parts] == [7, 3]
    for x, y in parts:
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x) * 2)


@pytest.mark.parametrize(
    "dataset",
    [
        torch.zeros(0),
        np.zeros((0, 3)),
        (torch.zeros(0), torch.zeros(0)),
        TensorDataset(torch.zeros(0)),
        (),
    ],
    ids=["tensor", "array", "tuple", "dataset", "empty-tuple"],
)
def test_split_rejects_an_empty_dataset(dataset):
    """Splitting zero samples is a ValueError."""
    with pytest.raises(ValueError, match="empty dataset"):
        split(dataset, 0.5, 0.5)


def test_split_of_a_tuple_rejects_unequal_lengths():
    """Splitting `(X, Y)` of different lengths is a ValueError, not silently truncated."""
    with pytest.raises(ValueError, match="same length"):
        split((torch.arange(4), torch.arange(6)), 0.5, 0.5)


@pytest.mark.parametrize(
    ("dataset", "fractions"),
    [
        (torch.arange(3.0), (0.9, 0.1)),
        (Data(torch.arange(3.0)), (0.9, 0.1)),
        (torch.arange(5.0), (0.3, 0.3, 0.3, 0.1)),
    ],
    ids=["tensor", "data", "negative-remainder"],
)
def test_split_rejects_fractions_that_leave_a_part_empty(dataset, fractions):
    """A split whose rounding leaves a part without samples is a ValueError from `split`."""
    with pytest.raises(ValueError, match="split"):
        split(dataset, *fractions)


# find_collate_fn and loader


def test_find_collate_fn_looks_through_subsets():
    """The dataset's own `collate_fn` is found on it and through nested `Subset`s."""
    dataset = _CollatingDataset()
    nested = Subset(Subset(dataset, [0, 1, 2]), [0, 1])
    assert find_collate_fn(dataset) == dataset.collate_fn
    assert find_collate_fn(nested) == dataset.collate_fn


def test_find_collate_fn_is_none_without_one():
    """A dataset without a `collate_fn` (or a non-callable one) gives None."""
    dataset = TensorDataset(torch.zeros(3))
    dataset.collate_fn = "not callable"
    assert find_collate_fn(Subset(dataset, [0])) is None
    assert find_collate_fn(TensorDataset(torch.zeros(3))) is None


def test_loader_returns_a_dataloader_with_batch_size_and_shuffle():
    """`loader` returns a DataLoader honouring `batch_size` and `shuffle`."""
    batches = loader(TensorDataset(torch.arange(10)), batch_size=4, shuffle=True)
    assert isinstance(batches, DataLoader)
    assert batches.batch_size == 4
    assert isinstance(batches.sampler, RandomSampler)
    assert len(batches) == 3
    visited = torch.cat([x for (x,) in batches])
    assert torch.equal(visited.sort().values, torch.arange(10))


def test_loader_does_not_shuffle_by_default():
    """Without `shuffle`, the batches come in dataset order."""
    batches = loader(TensorDataset(torch.arange(10)), batch_size=4)
    assert torch.equal(torch.cat([x for (x,) in batches]), torch.arange(10))


@pytest.mark.parametrize("wrap", [False, True], ids=["dataset", "split-subset"])
def test_loader_uses_the_dataset_collate_fn(wrap):
    """The dataset's `collate_fn` method builds the batches, also through a split's Subset."""
    dataset = _CollatingDataset(6)
    if wrap:
        dataset, _ = split(dataset, 0.5, 0.5, seed=0)
    tag, values = next(iter(loader(dataset, batch_size=3)))
    assert tag == "collated"
    assert values.shape == (3,)


def test_loader_kwargs_win_over_defaults():
    """A `collate_fn` or `pin_memory` given to `loader` wins over the found one and the default."""
    batches = loader(
        _CollatingDataset(4), batch_size=2, collate_fn=lambda items: len(items), drop_last=True
    )
    assert list(batches) == [2, 2]


@pytest.mark.parametrize("cuda", [False, True])
def test_loader_pins_memory_only_with_a_gpu(monkeypatch, cuda):
    """Memory is pinned by default when CUDA is available, and not otherwise."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert loader(TensorDataset(torch.zeros(2))).pin_memory is cuda
    assert loader(TensorDataset(torch.zeros(2)), pin_memory=False).pin_memory is False


@pytest.mark.parametrize("size", [np.int64(4), np.int32(4), np.uint8(4)])
def test_data_takes_numpy_integers_as_batch_size_and_seed(size):
    """A count computed with numpy (`np.int64(8)`) is a count: kept as a Python int."""
    data = Data((torch.arange(10), torch.arange(10)), batch_size=size, seed=np.int64(3))
    assert len(data) == 3
    assert type(data.batch_size) is int
    assert data.seed == 3
    assert kiln.repeat(data, np.int64(2)).times == 2
    assert len(loader(TensorDataset(torch.arange(10)), batch_size=size)) == 3  # torch's refusal


@pytest.mark.parametrize("size", [True, 4.0, "4", np.float64(4.0), np.int64(0)])
def test_data_still_refuses_what_is_no_positive_count(size):
    """Bools, floats, strings and zero stay refused, numpy's or not."""
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer; received"):
        Data(torch.arange(10), batch_size=size)
