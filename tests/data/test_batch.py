"""Tests of `kiln.data.batch`: batch formats, calling the model, and nested-batch helpers."""

from collections import OrderedDict, namedtuple

import pytest
import torch
from torch import nn

from kiln.data.batch import (
    batch_size_of,
    call_model,
    concat_outputs,
    first_tensor,
    is_on_device,
    slice_batch,
    split_batch,
    to_device,
)

Pair = namedtuple("Pair", ["image", "mask"])

CPU, META = torch.device("cpu"), torch.device("meta")


class _Recorder(nn.Module):
    """A model that returns the positional and keyword arguments it was called with."""

    def forward(self, *args, **kwargs):
        return args, kwargs


# split_batch

X, W, Y = torch.ones(4, 3), torch.full((4,), 0.5), torch.zeros(4)


@pytest.mark.parametrize(
    ("batch", "positions"),
    [
        ((X,), (0, None, None)),
        ([X], (0, None, None)),
        ((X, Y), (0, None, 1)),
        ([X, Y], (0, None, 1)),
        ((X, W, Y), (0, 1, 2)),
        (((X, X), Y), (0, None, 1)),
        (([X, X], W, Y), (0, 1, 2)),
    ],
    ids=["1-tuple", "1-list", "x-y", "x-y-list", "x-w-y", "inputs-y", "inputs-w-y"],
)
def test_split_batch_reads_every_sequence_format(batch, positions):
    """`(x,)`, `(x, y)` and `(x, w, y)` give `(inputs, weight, target)` by position."""
    parts = split_batch(batch)
    for part, position in zip(parts, positions, strict=True):
        assert part is (None if position is None else batch[position])


def test_split_batch_reads_a_tensor_as_inputs():
    """A tensor is the inputs alone."""
    inputs, weight, target = split_batch(X)
    assert inputs is X
    assert weight is None
    assert target is None


def test_split_batch_reads_a_dict_as_inputs():
    """A dict is the inputs alone (keyword inputs), even with two or three keys."""
    batch = {"input_ids": X, "mask": Y}
    assert split_batch(batch) == (batch, None, None)


def test_split_batch_reads_a_namedtuple_by_position():
    """A namedtuple of two items is read as `(x, y)` like any sequence."""
    inputs, weight, target = split_batch(Pair(X, Y))
    assert (inputs, weight, target) == (X, None, Y)


def test_split_batch_passes_other_objects_as_inputs():
    """Objects that are neither tensors, dicts nor sequences are inputs, as is a string."""
    obj = object()
    assert split_batch(obj) == (obj, None, None)
    assert split_batch("text") == ("text", None, None)


@pytest.mark.parametrize("size", [0, 4, 5])
def test_split_batch_rejects_other_lengths(size):
    """A sequence of 0 or more than three items is a ValueError naming the formats."""
    with pytest.raises(ValueError, match=rf"A batch of {size} items.*`\(x, w, y\)`"):
        split_batch((X,) * size)


# call_model


@pytest.mark.parametrize("inputs", [(X, Y), [X, Y]], ids=["tuple", "list"])
def test_call_model_unpacks_a_sequence_as_positional_inputs(inputs):
    """A tuple or list of inputs is called as `model(*inputs)`."""
    args, kwargs = call_model(_Recorder(), inputs)
    assert args == (X, Y)
    assert kwargs == {}


def test_call_model_unpacks_a_dict_as_keyword_inputs():
    """A dict of inputs is called as `model(**inputs)`."""
    args, kwargs = call_model(_Recorder(), OrderedDict(x=X, mask=Y))
    assert args == ()
    assert kwargs == {"x": X, "mask": Y}


def test_call_model_passes_a_tensor_as_one_input():
    """A tensor is called as `model(x)`."""
    args, kwargs = call_model(_Recorder(), X)
    assert len(args) == 1
    assert args[0] is X
    assert kwargs == {}


# first_tensor and batch_size_of


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        (X, X),
        (("label", [None, {"a": W, "b": X}], X), W),
        ({"ids": [Y, X], "mask": W}, Y),
        (Pair("name", X), X),
    ],
    ids=["tensor", "nested-sequence", "dict", "namedtuple"],
)
def test_first_tensor_searches_depth_first(batch, expected):
    """The first tensor met depth first (dict values in order) is returned."""
    assert first_tensor(batch) is expected


@pytest.mark.parametrize("batch", [None, "text", [], {"a": [1, 2]}, (None, 3.0)])
def test_first_tensor_is_none_without_tensors(batch):
    """A batch holding no tensor gives None."""
    assert first_tensor(batch) is None


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        (torch.zeros(7, 2), 7),
        ((torch.zeros(5, 3), torch.zeros(5)), 5),
        ({"x": torch.zeros(3, 4)}, 3),
        (((torch.zeros(6, 1), torch.zeros(6, 2)), torch.zeros(6)), 6),
        (torch.tensor(1.0), 1),
        (["no", "tensors"], 1),
    ],
    ids=["tensor", "x-y", "dict", "nested", "scalar", "no-tensor"],
)
def test_batch_size_of_reads_the_first_dimension(batch, expected):
    """The batch size is the first tensor's first dimension; 1 for a scalar or no tensor."""
    assert batch_size_of(batch) == expected


# to_device and is_on_device


def test_to_device_moves_nested_tensors_and_keeps_structure():
    """Every tensor moves; lists, tuples, dicts, namedtuples and other leaves keep their form."""
    batch = {"x": [torch.ones(2), ("tag", torch.zeros(1))], "pair": Pair(torch.ones(1), 3), "n": 5}
    moved = to_device(batch, META)
    assert set(moved) == {"x", "pair", "n"}
    assert isinstance(moved["x"], list)
    assert isinstance(moved["x"][1], tuple)
    assert moved["x"][1][0] == "tag"
    assert moved["x"][0].is_meta
    assert moved["x"][1][1].is_meta
    assert isinstance(moved["pair"], Pair)
    assert moved["pair"].image.is_meta
    assert moved["pair"].mask == 3
    assert moved["n"] == 5


def test_to_device_keeps_values_and_leaves_the_original():
    """Moving to the tensor's own device keeps the values; the input batch is not modified."""
    x = torch.arange(3.0)
    batch = (x, [x * 2])
    moved = to_device(batch, CPU, non_blocking=True)
    assert moved[0] is x
    assert torch.equal(moved[1][0], x * 2)
    assert not batch[0].is_meta


@pytest.mark.parametrize("leaf", [None, "text", 3, 2.5])
def test_to_device_returns_non_tensor_leaves_unchanged(leaf):
    """A non-tensor batch is returned as is."""
    assert to_device(leaf, META) is leaf


@pytest.mark.parametrize(
    ("batch", "on_cpu", "on_meta"),
    [
        (torch.zeros(1), True, False),
        ((torch.zeros(1), torch.zeros(1, device="meta")), False, False),
        ({"a": [torch.zeros(1, device="meta")], "b": "text"}, False, True),
        (Pair(torch.zeros(1), None), True, False),
        (["no", "tensors"], True, True),
    ],
    ids=["tensor", "mixed", "dict", "namedtuple", "no-tensor"],
)
def test_is_on_device_checks_every_tensor(batch, on_cpu, on_meta):
    """A batch is on a device only when all its tensors are (vacuously true without tensors)."""
    assert is_on_device(batch, CPU) is on_cpu
    assert is_on_device(batch, META) is on_meta


def test_is_on_device_after_to_device():
    """`to_device` leaves every tensor of the batch on the target device."""
    batch = {"x": (torch.ones(2), [torch.zeros(2)]), "y": torch.zeros(2)}
    assert is_on_device(to_device(batch, META), META)


# slice_batch


def test_slice_batch_slices_every_nested_tensor():
    """Each tensor of a nested batch is sliced; the structure and other leaves are kept."""
    x = torch.arange(10)
    batch = {"a": (x, [x * 2, "tag"]), "b": x + 1}
    part = slice_batch(batch, 2, 5)
    assert torch.equal(part["a"][0], x[2:5])
    assert isinstance(part["a"], tuple)
    assert isinstance(part["a"][1], list)
    assert torch.equal(part["a"][1][0], x[2:5] * 2)
    assert part["a"][1][1] == "tag"
    assert torch.equal(part["b"], x[2:5] + 1)


def test_slice_batch_is_a_view_not_a_copy():
    """Slicing takes views of the tensors (no gather)."""
    x = torch.arange(10)
    assert slice_batch(x, 3, 6).data_ptr() == x[3:].data_ptr()


def test_slice_batch_keeps_namedtuples():
    """A namedtuple batch is sliced into the same namedtuple type (as `to_device` keeps it)."""
    part = slice_batch(Pair(torch.arange(4), torch.arange(4) * 2), 1, 3)
    assert isinstance(part, Pair)
    assert torch.equal(part.mask, torch.tensor([2, 4]))


# concat_outputs


def test_concat_outputs_concatenates_tensors():
    """Tensor outputs are concatenated along the first dimension."""
    out = concat_outputs([torch.zeros(2, 3), torch.ones(1, 3)])
    assert torch.equal(out, torch.tensor([[0.0] * 3] * 2 + [[1.0] * 3]))


@pytest.mark.parametrize("kind", [tuple, list])
def test_concat_outputs_concatenates_sequences_per_position(kind):
    """Tuple or list outputs are concatenated position by position and keep their type."""
    outputs = [kind([torch.zeros(2), torch.ones(2, 1)]), kind([torch.ones(1), torch.zeros(3, 1)])]
    out = concat_outputs(outputs)
    assert isinstance(out, kind)
    assert torch.equal(out[0], torch.tensor([0.0, 0.0, 1.0]))
    assert out[1].shape == (5, 1)


def test_concat_outputs_concatenates_dicts_per_key():
    """Dict outputs (also nested) are concatenated key by key."""
    outputs = [
        {"logits": torch.zeros(2, 2), "extra": {"score": torch.zeros(2)}},
        {"logits": torch.ones(3, 2), "extra": {"score": torch.ones(3)}},
    ]
    out = concat_outputs(outputs)
    assert set(out) == {"logits", "extra"}
    assert out["logits"].shape == (5, 2)
    assert torch.equal(out["extra"]["score"], torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))


def test_concat_outputs_returns_non_tensor_leaves_as_a_list():
    """Non-tensor parts of the outputs are gathered into a list of the per-batch values."""
    out = concat_outputs([(torch.zeros(1), "a"), (torch.ones(1), "b")])
    assert out[1] == ["a", "b"]


def test_concat_outputs_keeps_namedtuples():
    """Namedtuple outputs are concatenated field by field into the same namedtuple type."""
    out = concat_outputs([Pair(torch.zeros(1), torch.ones(1)), Pair(torch.ones(2), torch.ones(2))])
    assert isinstance(out, Pair)
    assert out.image.shape == (3,)
