"""Tests of `kiln.devices`: `resolve_device` (on a CPU-only machine, CUDA simulated)."""

import pytest
import torch

from kiln.devices import resolve_device


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine with neither CUDA nor MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def three_gpus(monkeypatch):
    """A machine with three CUDA devices, with 10, 30 and 20 bytes free."""
    free = [10, 30, 20]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(free))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (free[index], 40))
    return free


@pytest.mark.parametrize("device", ["auto", None, True])
def test_resolve_device_auto_is_the_cpu_without_gpu(no_gpu, device):
    """`"auto"`, `None` and `True` give the CPU when there is no GPU."""
    assert resolve_device(device) == torch.device("cpu")


def test_resolve_device_default_is_auto(no_gpu):
    """Without an argument the device is chosen as for `"auto"`."""
    assert resolve_device() == torch.device("cpu")


def test_resolve_device_auto_on_this_machine_is_the_cpu():
    """On this CPU-only machine, unpatched, `"auto"` gives the CPU."""
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("device", [False, "cpu", torch.device("cpu")])
def test_resolve_device_cpu(no_gpu, device):
    """`False`, `"cpu"` and `torch.device("cpu")` give the CPU."""
    assert resolve_device(device) == torch.device("cpu")


@pytest.mark.parametrize("device", ["auto", None, True])
def test_resolve_device_auto_takes_the_gpu_with_most_free_memory(three_gpus, device):
    """With several GPUs, `"auto"` takes the one with the most free memory."""
    assert resolve_device(device) == torch.device("cuda", 1)


def test_resolve_device_auto_breaks_ties_by_lowest_index(three_gpus):
    """Between GPUs with equal free memory, the lowest index wins."""
    three_gpus[:] = [20, 5, 20]
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_resolve_device_auto_prefers_mps_over_cpu(no_gpu, monkeypatch):
    """Without CUDA but with Apple's MPS, `"auto"` takes MPS."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cuda", torch.device("cuda")),
        ("cuda:2", torch.device("cuda", 2)),
        (1, torch.device("cuda", 1)),
        (torch.device("cuda", 0), torch.device("cuda", 0)),
    ],
)
def test_resolve_device_takes_a_present_gpu(three_gpus, device, expected):
    """A CUDA name, an int index or a `torch.device` of a present GPU is returned."""
    assert resolve_device(device) == expected


@pytest.mark.parametrize("device", ["cuda:3", 3, torch.device("cuda", 5)])
def test_resolve_device_rejects_a_gpu_index_beyond_the_count(three_gpus, device):
    """A CUDA index past the last device is a ValueError naming the devices there are."""
    with pytest.raises(ValueError, match=r"does not exist: this machine has 3 CUDA device\(s\)"):
        resolve_device(device)


@pytest.mark.parametrize("device", ["cuda:3", "cuda", 0, torch.device("cuda", 0)])
def test_resolve_device_rejects_cuda_without_gpu(no_gpu, device):
    """Asking for CUDA on a machine without it is a ValueError suggesting `"auto"`."""
    with pytest.raises(ValueError, match=r"torch sees no CUDA device here.*device='auto'"):
        resolve_device(device)


def test_resolve_device_rejects_cuda_on_this_machine():
    """On this CPU-only machine, unpatched, `"cuda:3"` is a ValueError."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match=r"`device='cuda:3'` asks for a GPU"):
        resolve_device("cuda:3")


def test_resolve_device_rejects_mps_without_it(no_gpu):
    """Asking for MPS where it is not available is a ValueError."""
    with pytest.raises(ValueError, match=r"`device='mps'` asks for Apple's GPU"):
        resolve_device("mps")


@pytest.mark.parametrize("device", ["nonsense", "gpu", "CPU", ""])
def test_resolve_device_rejects_unknown_names(device):
    """An unknown device name is a ValueError listing the accepted forms."""
    with pytest.raises(ValueError, match=rf"`device={device!r}` is not a device name. Use 'auto'"):
        resolve_device(device)


@pytest.mark.parametrize(
    ("device", "kind"), [(2.5, "float"), ([0], "list"), (object(), "object"), (b"cpu", "bytes")]
)
def test_resolve_device_rejects_other_types(device, kind):
    """Floats, lists and other objects are a TypeError naming the type received."""
    with pytest.raises(TypeError, match=rf"`device` must be 'auto'.*received {kind}\."):
        resolve_device(device)


def test_resolve_device_rejects_a_negative_index(three_gpus):
    """A negative CUDA index is a ValueError like any other bad device."""
    with pytest.raises(ValueError, match="device"):
        resolve_device(-1)


def test_check_materialized_refuses_a_model_on_the_meta_device():
    """A model built on the meta device is told what it lacks and how to fill it."""
    from kiln.devices import check_materialized

    check_materialized(torch.nn.Linear(2, 1))
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    match = (
        r"The model Sequential has tensors on the meta device \(0\.weight, 0\.bias, 1\.weight, "
        r"1\.bias, 1\.running_mean and 2 more\).*`model\.to_empty\(device='cpu'\)`"
    )
    with pytest.raises(ValueError, match=match):
        check_materialized(model)
