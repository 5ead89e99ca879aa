"""Mixed precision on the CPU (bf16) and `compile=True` with its fallback to eager execution."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch._dynamo.exc import TorchDynamoException

import kiln
from kiln.loop.precision import autocast, compile_model, full_precision


class DtypeProbe(nn.Module):
    """Records the dtype of its first layer's output, per mode."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        self.seen: dict[bool, torch.dtype] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.layers[0](x)
        self.seen[self.training] = hidden.dtype
        return self.layers[2](self.layers[1](hidden))


def classification(n: int = 64):
    X = torch.randn(n, 4)
    return X, (X[:, 0] > 0).long()


def test_bf16_on_the_cpu_trains_in_bfloat16_with_float32_weights():
    model = DtypeProbe()
    trainer = kiln.Trainer(
        model,
        loss="cross_entropy",
        metrics=["accuracy"],
        precision="bf16",
        device="cpu",
        progress=False,
        optimizer="adam",
        lr=0.05,
    )
    history = trainer.fit(classification(), val=classification(), epochs=4, batch_size=16)
    assert model.seen == {True: torch.bfloat16, False: torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert history.loss[-1] < history.loss[0]
    predictions = trainer.predict(classification()[0])
    assert predictions.dtype == torch.float32
    assert predictions.shape == (64, 3)
    assert trainer.evaluate(classification()).accuracy >= 0.0


def test_bf16_differs_from_full_precision():
    """The option is not a no-op: the same run in 32-bit gives other losses."""
    losses = {}
    for precision in ("32", "bf16"):
        kiln.seed_everything(0)
        trainer = kiln.Trainer(
            DtypeProbe(), loss="cross_entropy", precision=precision, device="cpu", progress=False
        )
        losses[precision] = trainer.fit(classification(), batch_size=16).batch_losses
    assert losses["32"] != losses["bf16"]
    assert losses["32"] == pytest.approx(losses["bf16"], rel=0.05)


def test_autocast_refuses_devices_it_cannot_run_on():
    with pytest.raises(ValueError, match=r"precision='bf16' runs under torch.autocast on the CPU"):
        autocast("bf16", torch.device("meta"))
    assert isinstance(
        autocast("32", torch.device("meta")), type(autocast("32", torch.device("cpu")))
    )


def test_full_precision_casts_nested_half_tensors_only():
    values = (torch.ones(1, dtype=torch.float16), [torch.ones(1, dtype=torch.int64)], "text")
    cast = full_precision(values)
    assert cast[0].dtype == torch.float32
    assert cast[1][0].dtype == torch.int64
    assert cast[2] == "text"


def fit_compiled(monkeypatch, compiler) -> tuple[kiln.Trainer, list[warnings.WarningMessage]]:
    monkeypatch.setattr(torch, "compile", compiler)
    X, Y = classification(32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = kiln.Trainer(
            nn.Linear(4, 3), loss="cross_entropy", compile=True, device="cpu", progress=False
        )
        trainer.fit((X, Y), val=(X, Y), epochs=2, batch_size=8)
        trainer.predict(X)
    return trainer, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_compile_that_fails_to_wrap_falls_back_with_one_warning(monkeypatch):
    def broken(fn, **kwargs):
        raise RuntimeError("Dynamo is not supported here")

    trainer, caught = fit_compiled(monkeypatch, broken)
    assert len(caught) == 1
    assert "could not compile Linear (RuntimeError: Dynamo is not supported here)" in str(
        caught[0].message
    )
    assert trainer.model._compiled_call_impl is None
    assert trainer.state.step == 8


class CompilerFailed(TorchDynamoException):
    pass


def test_compile_that_fails_at_the_first_call_falls_back_with_one_warning(monkeypatch):
    calls = []

    def failing_at_call(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(1)
            raise CompilerFailed("backend compiler failed: no C compiler")

        return compiled

    trainer, caught = fit_compiled(monkeypatch, failing_at_call)
    assert len(calls) == 1
    assert len(caught) == 1
    assert "training continues in eager mode" in str(caught[0].message)
    assert trainer.model._compiled_call_impl is None
    assert trainer.state.step == 8


def test_compile_wraps_the_forward_and_keeps_the_state_dict_keys(monkeypatch):
    calls = []

    def counting(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(1)
            return fn(*args, **kw)

        return compiled

    trainer, caught = fit_compiled(monkeypatch, counting)
    assert caught == []
    assert len(calls) == 8 + 2 * 4 + 1  # training, validation and prediction batches
    assert sorted(trainer.model.state_dict()) == ["bias", "weight"]


def test_compile_model_reports_success():
    model = nn.Linear(2, 2)
    assert compile_model(model, compiler=lambda fn: fn)
    assert model(torch.ones(1, 2)).shape == (1, 2)
