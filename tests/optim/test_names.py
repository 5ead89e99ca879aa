"""Tests of `kiln.optim.names`: resolving `optimizer=` into a torch optimizer."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from kiln.optim import OPTIMIZER_NAMES, resolve_optimizer

EXPECTED = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adamax": torch.optim.Adamax,
    "adadelta": torch.optim.Adadelta,
    "asgd": torch.optim.ASGD,
    "rprop": torch.optim.Rprop,
}


def _model() -> nn.Module:
    return nn.Linear(3, 2)


def test_optimizer_names_table():
    """The table holds exactly the documented names."""
    assert OPTIMIZER_NAMES == EXPECTED


@pytest.mark.parametrize(("name", "cls"), sorted(EXPECTED.items()))
def test_resolve_optimizer_by_name(name, cls):
    """Each name builds its torch class over the model's parameters with the given lr."""
    model = _model()
    optimizer = resolve_optimizer(name, model, lr=0.05)
    assert type(optimizer) is cls
    assert optimizer.defaults["lr"] == 0.05
    assert optimizer.param_groups[0]["params"] == list(model.parameters())


@pytest.mark.parametrize("name", ["SGD", "Adam", "ADAMW", " rmsprop ", "RAdam"])
def test_resolve_optimizer_case_insensitive(name):
    """Names are case-insensitive and stripped."""
    optimizer = resolve_optimizer(name, _model(), lr=0.1)
    assert type(optimizer) is EXPECTED[name.strip().lower()]


@pytest.mark.parametrize(
    ("name", "lr"), [("sgd", 1e-2), ("adam", 1e-3), ("adamw", 1e-3), ("rmsprop", 1e-3)]
)
def test_resolve_optimizer_default_lr(name, lr):
    """Without `lr` a name gets 1e-3, or 1e-2 for SGD."""
    assert resolve_optimizer(name, _model(), lr=None).defaults["lr"] == lr


def test_resolve_optimizer_only_trainable_parameters():
    """Frozen parameters are left out of the optimizer."""
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model[0].requires_grad_(False)
    optimizer = resolve_optimizer("adam", model, lr=None)
    assert optimizer.param_groups[0]["params"] == list(model[1].parameters())


def test_resolve_optimizer_instance_passes_through():
    """An optimizer instance is returned as it is."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    assert resolve_optimizer(optimizer, model, lr=None) is optimizer


def test_resolve_optimizer_callable():
    """A callable taking the parameters is called to build the optimizer."""
    model = _model()
    optimizer = resolve_optimizer(functools.partial(torch.optim.SGD, lr=0.1), model, lr=None)
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.defaults["lr"] == 0.1
    assert optimizer.param_groups[0]["params"] == list(model.parameters())


def test_resolve_optimizer_callable_returns_non_optimizer():
    """A callable that returns no optimizer raises TypeError naming what it returned."""
    with pytest.raises(TypeError, match=r"must return a torch\.optim\.Optimizer; it returned list"):
        resolve_optimizer(list, _model(), lr=None)


@pytest.mark.parametrize("bad", [42, 0.1, None])
def test_resolve_optimizer_bad_kind(bad):
    """Anything but a name, an optimizer or a callable raises TypeError."""
    with pytest.raises(TypeError, match=r"`optimizer` must be a name"):
        resolve_optimizer(bad, _model(), lr=None)


def test_resolve_optimizer_unknown_name_lists_known():
    """An unknown name raises ValueError listing the known names."""
    with pytest.raises(ValueError, match=r"Unknown optimizer 'lbfgsx'\. Known names: sgd, adam"):
        resolve_optimizer("lbfgsx", _model(), lr=None)


def test_resolve_optimizer_lr_with_instance():
    """`lr` given with an optimizer instance raises ValueError."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    with pytest.raises(ValueError, match=r"`lr=0\.1` cannot apply to an optimizer built outside"):
        resolve_optimizer(optimizer, model, lr=0.1)


def test_resolve_optimizer_lr_with_callable():
    """`lr` given with an optimizer callable raises ValueError."""
    with pytest.raises(ValueError, match=r"cannot apply to an optimizer built outside"):
        resolve_optimizer(functools.partial(torch.optim.SGD, lr=0.1), _model(), lr=0.01)


@pytest.mark.parametrize("lr", [-0.1, float("nan")])
def test_resolve_optimizer_negative_lr(lr):
    """A negative or NaN learning rate raises ValueError."""
    with pytest.raises(ValueError, match=r"`lr` must be a number of at least 0 .*; received"):
        resolve_optimizer("adam", _model(), lr=lr)


@pytest.mark.parametrize("lr", [0, 0.0, np.float32(0.0)])
def test_resolve_optimizer_accepts_a_zero_lr(lr):
    """`lr=0`, which torch accepts (a frozen or evaluated model), is not refused."""
    assert resolve_optimizer("sgd", _model(), lr=lr).defaults["lr"] == 0


@pytest.mark.parametrize(
    ("lr", "message"),
    [
        ("0.1", r"received '0\.1' \(str\)\. Pass a number: lr=0\.1\."),
        ("fast", r"received 'fast' \(str\)\.$"),
        (True, r"received True \(bool\)"),
    ],
)
def test_resolve_optimizer_lr_of_another_type(lr, message):
    """A learning rate that is no number raises TypeError, not torch's comparison error."""
    with pytest.raises(TypeError, match=r"`lr` must be a number \(such as 1e-3\); " + message):
        resolve_optimizer("adam", _model(), lr=lr)


def test_resolve_optimizer_frozen_model_hint_names_optimizer_none():
    """A model without trainable parameters is told how to evaluate it: `optimizer=None`."""
    with pytest.raises(ValueError, match=r"To only evaluate or predict, pass `optimizer=None`"):
        resolve_optimizer("adam", nn.Linear(3, 2).requires_grad_(False), lr=None)


@pytest.mark.parametrize("model", [nn.ReLU(), nn.Linear(3, 2).requires_grad_(False)])
def test_resolve_optimizer_no_trainable_parameters(model):
    """A model without trainable parameters raises ValueError."""
    with pytest.raises(ValueError, match=r"no trainable parameters"):
        resolve_optimizer("adam", model, lr=None)


def test_trainer_fits_with_a_zero_lr_and_leaves_the_weights():
    """`Trainer(lr=0.0)` trains (a frozen run: the loss is measured, the weights stay)."""
    import kiln

    model = _model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    trainer = kiln.Trainer(model, loss="mse", optimizer="sgd", lr=0.0, device="cpu",
                           progress=False)  # fmt: skip
    history = trainer.fit((torch.randn(8, 3), torch.randn(8, 2)), epochs=2)
    assert history.lr == [0.0, 0.0]
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def _steps(optimizer_of, dtype: torch.dtype, steps: int = 60) -> list[torch.Tensor]:
    """Train a small MLP `steps` steps; return its weights, then the optimizer's state tensors."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)
    optimizer = optimizer_of(model)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 8, generator=generator).to(dtype)
        y = torch.randint(0, 3, (16,), generator=generator)
        loss = nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return [p.detach() for p in model.parameters()] + state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_name_builds_the_fastest_implementation_of_the_same_update(name, dtype):
    """On the CPU a name builds foreach where it is bit for bit torch's default update."""
    from kiln.optim.names import FOREACH_SAME_UPDATE

    built = resolve_optimizer(name, _model(), lr=None)
    assert built.defaults["foreach"] is (True if name in FOREACH_SAME_UPDATE else None)
    if name not in FOREACH_SAME_UPDATE:
        return
    lr = built.defaults["lr"]
    ours = _steps(lambda model: resolve_optimizer(name, model, lr=None), dtype)
    torchs = _steps(lambda model: EXPECTED[name](model.parameters(), lr=lr), dtype)
    assert len(ours) == len(torchs)
    assert all(torch.equal(a, b) for a, b in zip(ours, torchs, strict=True))


def test_a_tensor_lr_keeps_torch_default_implementation():
    """torch refuses a tensor `lr` with foreach: such a rate keeps torch's default."""
    built = resolve_optimizer("adam", _model(), lr=torch.tensor(1e-3))  # type: ignore[arg-type]
    assert built.defaults["foreach"] is None
