"""Tests of `kiln.optim.lookahead.Lookahead` and the `"ranger"` name."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import kiln
from kiln.optim import resolve_optimizer
from kiln.optim.lookahead import Lookahead


def _quadratic_step(optimizer: torch.optim.Optimizer, w: nn.Parameter, a: torch.Tensor) -> None:
    """One step on f(w) = 0.5 * sum(a * w**2), whose gradient is a * w."""
    optimizer.zero_grad(set_to_none=True)
    (0.5 * (a * w**2).sum()).backward()
    optimizer.step()


def test_lookahead_matches_the_algorithm_by_hand():
    """SGD inside Lookahead equals a hand-written loop of the published rule."""
    a = torch.tensor([1.0, 2.0, 0.5])
    w = nn.Parameter(torch.tensor([1.0, -1.0, 3.0]))
    optimizer = Lookahead(torch.optim.SGD([w], lr=0.1), k=3, alpha=0.3)
    fast, slow = w.detach().clone(), w.detach().clone()
    for step in range(1, 11):
        _quadratic_step(optimizer, w, a)
        fast = fast - 0.1 * a * fast
        if step % 3 == 0:
            slow = slow + 0.3 * (fast - slow)
            fast = slow.clone()
        torch.testing.assert_close(w.detach(), fast)
    assert optimizer.steps == 10


def test_lookahead_first_synchronisation_by_hand():
    """w=1, grad=w, lr=0.1, k=2, alpha=0.5: 0.9, 0.81, then back to 1 + 0.5*(0.81-1)."""
    w = nn.Parameter(torch.tensor([1.0]))
    optimizer = Lookahead(torch.optim.SGD([w], lr=0.1), k=2, alpha=0.5)
    one = torch.ones(1)
    _quadratic_step(optimizer, w, one)
    assert w.item() == pytest.approx(0.9)
    _quadratic_step(optimizer, w, one)
    assert w.item() == pytest.approx(0.905)
    _quadratic_step(optimizer, w, one)
    assert w.item() == pytest.approx(0.8145)


def test_lookahead_shares_the_inner_groups_and_state():
    """param_groups, state and defaults are the inner optimizer's own objects."""
    net = nn.Linear(2, 1)
    inner = torch.optim.Adam(net.parameters(), lr=0.01)
    optimizer = Lookahead(inner)
    assert optimizer.param_groups is inner.param_groups
    net(torch.randn(3, 2)).sum().backward()
    optimizer.step()
    assert optimizer.state is inner.state
    assert "exp_avg" in optimizer.state[net.weight]
    assert optimizer.defaults is inner.defaults
    optimizer.zero_grad()
    assert net.weight.grad is None


def test_lr_scheduler_on_lookahead_changes_the_logged_lr():
    """StepLR built on a Lookahead halves the inner lr each epoch; the trainer logs it."""
    net = nn.Linear(2, 1)
    optimizer = Lookahead(torch.optim.SGD(net.parameters(), lr=0.1), k=2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    class StepScheduler(kiln.Callback):
        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            scheduler.step()

    trainer = kiln.Trainer(
        net, loss="mse", optimizer=optimizer, callbacks=[StepScheduler()], device="cpu",
        progress=False,
    )  # fmt: skip
    history = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), epochs=3, batch_size=4)
    assert history.lr == [0.1, 0.05, 0.025]
    assert optimizer.optimizer.param_groups[0]["lr"] == 0.0125


def _run(optimizer: Lookahead, w: nn.Parameter, steps: int) -> None:
    a = torch.linspace(0.5, 2.0, w.numel())
    for _ in range(steps):
        _quadratic_step(optimizer, w, a)


def test_state_dict_round_trip_continues_bitwise():
    """A state saved mid-cycle, loaded with weights_only, continues exactly."""
    w = nn.Parameter(torch.randn(5))
    optimizer = Lookahead(torch.optim.Adam([w], lr=0.1), k=4, alpha=0.6)
    _run(optimizer, w, 6)
    buffer = io.BytesIO()
    torch.save({"w": w.detach().clone(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["optimizer"]["lookahead"]["steps"] == 6
    _run(optimizer, w, 7)

    w2 = nn.Parameter(saved["w"])
    other = Lookahead(torch.optim.Adam([w2], lr=0.5), k=1, alpha=1.0)
    other.load_state_dict(saved["optimizer"])
    assert (other.k, other.alpha, other.steps) == (4, 0.6, 6)
    _run(other, w2, 7)
    assert torch.equal(w, w2)


def test_plain_optimizer_state_loads_and_restarts_the_slow_weights():
    """A plain Adam state dict loads into the inner optimizer; slow weights start afresh."""
    w = nn.Parameter(torch.randn(3))
    adam = torch.optim.Adam([w], lr=0.1)
    _run(adam, w, 2)  # type: ignore[arg-type]
    optimizer = Lookahead(torch.optim.Adam([w], lr=0.1), k=2)
    _run(optimizer, w, 1)
    optimizer.load_state_dict(adam.state_dict())
    assert optimizer.steps == 0
    assert optimizer.state_dict()["lookahead"]["slow"] == []
    assert optimizer.state[w]["step"] == 2
    before = w.detach().clone()
    _run(optimizer, w, 2)  # the slow weights start from `before`
    assert not torch.equal(w, before)


def test_load_state_dict_refuses_other_parameters():
    """Slow weights for another number of parameters are refused, with both counts."""
    params = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(1))]
    optimizer = Lookahead(torch.optim.SGD(params, lr=0.1))
    state = optimizer.state_dict()
    state["lookahead"]["slow"] = [torch.zeros(3)]
    with pytest.raises(ValueError, match=r"holds 1 slow weights, but the optimizer has 2"):
        optimizer.load_state_dict(state)


def test_load_state_dict_refuses_other_shapes():
    """A slow weight of another shape is refused."""
    w = nn.Parameter(torch.randn(3))
    optimizer = Lookahead(torch.optim.SGD([w], lr=0.1))
    _run(optimizer, w, 1)
    state = optimizer.state_dict()
    state["lookahead"]["slow"] = [torch.zeros(4)]
    with pytest.raises(ValueError, match=r"shape \(4,\), but its parameter has \(3,\)"):
        Lookahead(torch.optim.SGD([nn.Parameter(torch.zeros(3))], lr=0.1)).load_state_dict(state)


def test_add_param_group_gets_slow_weights_from_the_next_step():
    """A group added later is optimized and synchronised like the first."""
    first, second = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    optimizer = Lookahead(torch.optim.SGD([first], lr=0.1), k=2, alpha=0.5)
    _run(optimizer, first, 1)
    optimizer.add_param_group({"params": [second], "lr": 0.1})
    assert len(optimizer.param_groups) == 2
    optimizer.zero_grad()
    (0.5 * (first**2).sum() + 0.5 * (second**2).sum()).backward()
    optimizer.step()
    # `second` starts at step 2 from 1: one inner step (0.9), then step 2 synchronises.
    torch.testing.assert_close(second.detach(), torch.full((2,), 0.95))
    assert len(optimizer.state_dict()["lookahead"]["slow"]) == 2


def test_closure_and_step_hooks_pass_through():
    """step(closure) returns the closure's loss; step hooks registered on Lookahead run."""
    w = nn.Parameter(torch.ones(2))
    optimizer = Lookahead(torch.optim.SGD([w], lr=0.1))
    calls = []
    optimizer.register_step_post_hook(lambda *args: calls.append("post"))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == 2.0  # type: ignore[union-attr]
    assert calls == ["post"]


def test_bad_arguments_say_what_was_received():
    """A non-optimizer, a bad k or a bad alpha raise clear errors."""
    params = [nn.Parameter(torch.ones(1))]
    with pytest.raises(
        TypeError, match=r"Lookahead wraps a torch\.optim\.Optimizer.*received list"
    ):
        Lookahead(params)  # type: ignore[arg-type]
    for k in (0, 2.5, True):
        with pytest.raises(ValueError, match=rf"`k` .* positive integer; received {k!r}"):
            Lookahead(torch.optim.SGD(params, lr=0.1), k=k)  # type: ignore[arg-type]
    for alpha in (0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match=rf"`alpha` .* in \(0, 1\]; received {alpha!r}"):
            Lookahead(torch.optim.SGD(params, lr=0.1), alpha=alpha)


def test_ranger_by_name():
    """ "ranger" is RAdam inside Lookahead, with the usual default learning rate."""
    net = nn.Linear(3, 2)
    optimizer = resolve_optimizer("Ranger", net, lr=None)
    assert isinstance(optimizer, Lookahead)
    assert type(optimizer.optimizer) is torch.optim.RAdam
    assert optimizer.param_groups[0]["lr"] == 1e-3
    assert optimizer.param_groups[0]["params"] == list(net.parameters())
    assert resolve_optimizer("ranger", net, lr=0.01).param_groups[0]["lr"] == 0.01
    with pytest.raises(ValueError, match=r"Known names: sgd, .*, rprop, ranger\."):
        resolve_optimizer("rangr", net, lr=None)


def _ranger_run(directory) -> tuple[kiln.Trainer, kiln.Data]:
    kiln.seed_everything(0)
    X = torch.randn(48, 4)
    Y = (X.sum(1) > 0).long()
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    trainer = kiln.Trainer(
        net, loss="cross_entropy", optimizer="ranger", lr=0.01, dir=directory, device="cpu",
        progress=False,
    )  # fmt: skip
    return trainer, kiln.Data((X, Y), batch_size=12, shuffle=True)


def test_ranger_resume_mid_cycle_equals_an_uninterrupted_run(tmp_path):
    """3 batches an epoch, k=5: resuming after epoch 2 (step 6) continues bitwise."""
    straight, data = _ranger_run(tmp_path / "straight")
    straight.fit(data, val=0.25, epochs=4)
    first, data = _ranger_run(tmp_path / "resumed")
    first.fit(data, val=0.25, epochs=2, resume=True)
    assert first.optimizer.steps % 5 != 0  # type: ignore[union-attr]
    second, data = _ranger_run(tmp_path / "resumed")
    second.fit(data, val=0.25, epochs=4, resume=True)
    assert second.state.resumed
    assert second.history.batch_losses == straight.history.batch_losses
    for ours, theirs in zip(second.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    slow = zip(
        second.optimizer.state_dict()["lookahead"]["slow"],  # type: ignore[union-attr]
        straight.optimizer.state_dict()["lookahead"]["slow"],  # type: ignore[union-attr]
        strict=True,
    )
    assert all(torch.equal(ours, theirs) for ours, theirs in slow)


def test_lookahead_takes_a_numpy_k():
    """`k=np.int64(3)` is a count like 3, kept as a Python int."""
    import numpy as np

    optimizer = Lookahead(torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=0.1), k=np.int64(3))
    assert optimizer.k == 3
    assert type(optimizer.k) is int
