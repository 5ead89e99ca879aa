"""Tests of QuNet's curves, their chain and its plan (`kiln.optim.schedules`, `schedule_chain`)."""

from __future__ import annotations

import math

import pytest

from kiln.optim import (
    ConstantSchedule,
    EpochFunction,
    ExponentialSchedule,
    LinearSchedule,
    Plan,
    ScheduleChain,
    WarmupCosine,
    plot_plan,
)

# QuNet e1623de, observed (seed-spec Q9): the rate of each epoch.
QUNET_COSINE = [1e-4, 5.05e-3, 1e-2, 9.40e-3, 7.75e-3, 5.50e-3, 3.25e-3, 1.60e-3, 1e-3, 1e-3]
QUNET_CHAIN = [
    1e-4, 5.05e-3, 1e-2, 8.68e-3, 5.5e-3, 2.32e-3, 1e-3, 1e-3,
    1e-3, 1e-3, 3.16e-4, 1e-4, 3.16e-5, 1e-5, 1e-5, 1e-5,
]  # fmt: skip


def qunet_chain() -> ScheduleChain:
    chain = ScheduleChain()
    chain.set(WarmupCosine(1e-4, 1e-2, 1e-3, epochs=6, warmup=2))
    chain.add(ConstantSchedule(1e-3, epochs=3))
    chain.add(ExponentialSchedule(1e-3, 1e-5, epochs=4))
    return chain


def close(ours: list[float], theirs: list[float]) -> bool:
    """Equal to the 3 digits QuNet's observed values were printed with."""
    return all(math.isclose(a, b, rel_tol=3e-3) for a, b in zip(ours, theirs, strict=True))


def test_warmup_cosine_reproduces_qunet():
    plan = ScheduleChain(WarmupCosine(1e-4, 1e-2, 1e-3, epochs=8, warmup=2)).plan(10)
    assert close(plan.lrs, QUNET_COSINE)
    assert plan.lrs[2] == pytest.approx(1e-2, abs=1e-15)  # QuNet's formula, same rounding
    assert plan.lrs[8] == 1e-3
    assert plan.ends == [8]


def test_chain_reproduces_qunet_with_its_end_marks():
    plan = qunet_chain().plan(16)
    assert close(plan.lrs, QUNET_CHAIN)
    assert plan.ends == [6, 9, 13]


def test_exact_formulas():
    cosine = WarmupCosine(0.0, 1.0, 0.5, epochs=10, warmup=4)
    assert cosine.value(1, 0.0, 0.5) == 0.25
    expected = 0.5 + 0.5 * (1 + math.cos(math.pi * 3 / 6)) / 2
    assert cosine.value(7, 0.0, 0.5) == expected
    assert LinearSchedule(1.0, 0.0, epochs=4).value(3, 1.0, 0.0) == 0.25
    assert ExponentialSchedule(1.0, 0.01, epochs=2).value(1, 1.0, 0.01) == math.exp(
        math.log(0.01) / 2
    )
    assert ExponentialSchedule(0.0, 0.1, epochs=2).value(1, 0.0, 0.1) == 0.0  # QuNet: stays at 0
    assert ConstantSchedule(0.3, epochs=2).value(1, 0.3, 0.3) == 0.3
    assert WarmupCosine(0.1, 1.0, 0.0, epochs=3, warmup=0).value(0, 0.1, 0.0) == 1.0


def test_samples_count_the_samples_of_each_step():
    chain = ScheduleChain(LinearSchedule(1.0, 0.0, samples=1e2))
    assert chain.schedules[0].length == 100
    assert chain.plan(6, samples=25).lrs == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    # Per optimizer step: batches of 30, 30, 30 and 10 samples, repeated.
    plan = chain.plan(5, samples=[30, 30, 30, 10], interval="step")
    assert plan.lrs == pytest.approx([1.0, 0.7, 0.4, 0.1, 0.0])
    assert plan.ends == [4]


def test_curves_with_unknown_ends_start_from_the_current_rate():
    chain = ScheduleChain([ConstantSchedule(0.5, epochs=1), LinearSchedule(None, 0.1, epochs=2)])
    assert chain.plan(4).lrs == pytest.approx([0.5, 0.5, 0.3, 0.1])
    assert ScheduleChain(LinearSchedule(None, None, epochs=2)).plan(3, lr=0.2).lrs == [0.2] * 3
    with pytest.raises(ValueError, match=r"planning needs it: pass `lr=`"):
        ScheduleChain(LinearSchedule(None, 0.1, epochs=2)).plan(3)


def test_a_following_curve_never_applies_its_own_start():
    """QuNet: the epoch after a curve ends runs at its final rate, then the next curve steps."""
    chain = ScheduleChain([ConstantSchedule(0.1, epochs=1), LinearSchedule(1.0, 0.0, epochs=2)])
    assert chain.plan(4).lrs == [0.1, 0.1, 0.5, 0.0]


def test_stop_clear_restart_and_state_round_trip():
    chain = qunet_chain()
    for _ in range(7):
        chain.advance(1e-3, 1, 0)
    assert (chain.index, chain.done) == (1, 1)
    saved = chain.state_dict()
    other = qunet_chain()
    other.load_state_dict(saved)
    assert [other.advance(1e-3, 1, 0) for _ in range(5)] == [
        chain.advance(1e-3, 1, 0) for _ in range(5)
    ]
    chain.stop()
    assert chain.finished
    assert chain.advance(0.5, 1, 0) == (None, False)
    chain.restart()
    assert (chain.index, chain.done, chain.start_lr()) == (0, 0, 1e-4)
    chain.clear()
    assert len(chain) == 0
    assert chain.start_lr() is None


def test_a_state_from_another_chain_is_refused():
    with pytest.raises(ValueError, match=r"had 3 curve\(s\), but this one has 1"):
        ScheduleChain(ConstantSchedule(0.1, epochs=1)).load_state_dict(qunet_chain().state_dict())


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: LinearSchedule(0.1, 0.2), ValueError, "needs exactly one of `epochs` and `samp"),
        (lambda: LinearSchedule(0.1, 0.2, epochs=2, samples=9), ValueError, "exactly one of"),
        (lambda: LinearSchedule(-0.1, 0.2, epochs=2), ValueError, "`lr1` must be a learning rate "),
        (lambda: ExponentialSchedule(0.1, math.nan, epochs=2), ValueError, "received nan"),
        (lambda: LinearSchedule("0.1", 0.2, epochs=2), TypeError, "`lr1` must be a number"),
        (lambda: ConstantSchedule(0.1, epochs=0), ValueError, "`epochs` must be a whole number of"),
        (lambda: ConstantSchedule(0.1, samples=2.5), ValueError, "received 2.5"),
        (lambda: ConstantSchedule(0.1, epochs=True), TypeError, "`epochs` must be a whole number"),
        (lambda: WarmupCosine(0.1, -1.0, 0.0, epochs=3), ValueError, "`lr_hot` must be"),
        (lambda: WarmupCosine(0.1, 1.0, 0.0, epochs=3, warmup=3), ValueError, "must be shorter"),
        (lambda: WarmupCosine(0.1, 1.0, 0.0, epochs=3, warmup=-1), ValueError, "at least 0"),
        (lambda: ScheduleChain([0.1]), TypeError, "holds kiln schedules .* received float"),
        (lambda: ScheduleChain(0.1), TypeError, "holds kiln schedules .* received float"),
        (lambda: EpochFunction(0.1), TypeError, "needs a function `fn\\(epoch\\) -> lr`"),
        (lambda: qunet_chain().plan(0), ValueError, "`steps` must be a positive whole number"),
    ],
)
def test_bad_arguments_are_refused(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_epoch_function_checks_its_values():
    assert EpochFunction(lambda epoch: 10**-epoch)(2) == 0.01
    with pytest.raises(ValueError, match=r"the value of fn\(3\)` must be a learning rate"):
        EpochFunction(lambda epoch: -1.0)(3)
    with pytest.raises(TypeError, match=r"the value of fn\(0\)` must be a number .* NoneType"):
        EpochFunction(lambda epoch: None)(0)


def test_plot_marks_each_end(tmp_path):
    pytest.importorskip("matplotlib")
    plan = qunet_chain().plan(16)
    figure = plot_plan(plan, title="QuNet chain")
    axes = figure.axes[0]
    assert axes.get_yscale() == "log"
    assert list(axes.lines[0].get_ydata()) == plan.lrs
    assert [line.get_xdata()[0] for line in axes.lines[1:]] == [6, 9, 13]
    figure.savefig(tmp_path / "chain.png")
    assert (tmp_path / "chain.png").stat().st_size > 0
    linear = plot_plan(Plan(lrs=[0.0, 0.5], ends=[]), steps_per_epoch=2, log=True)
    assert linear.axes[0].get_yscale() == "linear"  # a rate of 0 has no log
