"""Tests of `kiln.metrics.regression`: MSE, RMSE and MAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kiln.metrics import MeanAbsoluteError, MeanSquaredError, R2Score, RootMeanSquaredError

RNG = np.random.default_rng(0)
OUTPUT = RNG.normal(size=(12, 2)).astype(np.float32)
TARGET = RNG.normal(size=(12, 2)).astype(np.float32)
ERROR = OUTPUT.astype(np.float64) - TARGET.astype(np.float64)

REFERENCE = {
    MeanSquaredError: float(np.mean(ERROR**2)),
    RootMeanSquaredError: float(np.sqrt(np.mean(ERROR**2))),
    MeanAbsoluteError: float(np.mean(np.abs(ERROR))),
}
METRICS = list(REFERENCE)


@pytest.mark.parametrize("cls", METRICS)
def test_regression_metric_matches_numpy(cls):
    """Each metric equals its numpy formula on one batch."""
    metric = cls()
    metric.update(torch.from_numpy(OUTPUT), torch.from_numpy(TARGET))
    assert float(metric.compute()) == pytest.approx(REFERENCE[cls], rel=1e-6)


@pytest.mark.parametrize("cls", METRICS)
def test_regression_metric_accumulates_over_batches(cls):
    """Batches of different sizes accumulate to the value over all elements."""
    metric = cls()
    for start, stop in [(0, 1), (1, 4), (4, 12)]:
        metric.update(torch.from_numpy(OUTPUT[start:stop]), torch.from_numpy(TARGET[start:stop]))
    assert float(metric.compute()) == pytest.approx(REFERENCE[cls], rel=1e-6)


def test_rmse_is_root_of_pass_mse_not_mean_of_batch_roots():
    """RMSE takes the root of the whole pass's MSE."""
    metric = RootMeanSquaredError()
    metric.update(torch.zeros(1), torch.tensor([3.0]))
    metric.update(torch.zeros(3), torch.ones(3))
    assert float(metric.compute()) == pytest.approx(np.sqrt((9 + 3) / 4))


@pytest.mark.parametrize("cls", METRICS)
def test_regression_metric_reset(cls):
    """`reset` forgets what was accumulated."""
    metric = cls()
    metric.update(torch.zeros(2), torch.full((2,), 5.0))
    metric.reset()
    metric.update(torch.zeros(2), torch.full((2,), 2.0))
    assert float(metric.compute()) == pytest.approx(4.0 if cls is MeanSquaredError else 2.0)


@pytest.mark.parametrize("cls", METRICS)
def test_regression_metric_compute_before_update(cls):
    """`compute` before any update raises ValueError."""
    with pytest.raises(ValueError, match=r"has seen no samples"):
        cls().compute()


@pytest.mark.parametrize("cls", METRICS)
@pytest.mark.parametrize(("output", "target"), [((4, 1), (4,)), ((4,), (4, 1)), ((4, 2), (4, 1))])
def test_regression_metric_shape_mismatch(cls, output, target):
    """Output and target of different shapes raise ValueError instead of broadcasting."""
    with pytest.raises(ValueError, match=r"differs from the target's.*would broadcast"):
        cls().update(torch.zeros(output), torch.zeros(target))


@pytest.mark.parametrize("cls", METRICS)
def test_regression_metric_non_tensor(cls):
    """Non-tensor inputs raise TypeError."""
    with pytest.raises(TypeError, match=r"needs tensor outputs and targets"):
        cls().update([0.0], torch.zeros(1))


@pytest.mark.parametrize(
    ("cls", "name"),
    [(MeanSquaredError, "mse"), (RootMeanSquaredError, "rmse"), (MeanAbsoluteError, "mae")],
)
def test_regression_metric_defaults(cls, name):
    """The default names are short, and lower values are better."""
    metric = cls()
    assert metric.name == name
    assert metric.higher_is_better is False
    assert cls(name="custom").name == "custom"


def test_regression_metric_accumulates_in_float64():
    """Sums are kept in float64 on the CPU, so long passes stay exact."""
    metric = MeanSquaredError()
    metric.update(torch.zeros(2), torch.ones(2))
    assert metric.compute().dtype == torch.float64


# --------------------------------------------------------------------------------------------
# R2


def test_r2_equals_sklearn_over_unequal_batches():
    """R2 over batches of unequal sizes equals r2_score on all rows (columns averaged)."""
    from sklearn.metrics import r2_score

    target = TARGET + 3.0  # a mean far from zero: the sums must not lose the spread
    metric = R2Score()
    for start, stop in [(0, 1), (1, 4), (4, 12)]:
        metric.update(torch.from_numpy(OUTPUT[start:stop]), torch.from_numpy(target[start:stop]))
    expected = r2_score(target.astype(np.float64), OUTPUT.astype(np.float64))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)


def test_r2_single_column():
    """1-D outputs are one column."""
    from sklearn.metrics import r2_score

    metric = R2Score()
    metric.update(torch.from_numpy(OUTPUT[:, 0]), torch.from_numpy(TARGET[:, 0]))
    expected = r2_score(TARGET[:, 0].astype(np.float64), OUTPUT[:, 0].astype(np.float64))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)


def test_r2_constant_targets():
    """Constant targets score 1 when predicted exactly, else 0 (scikit-learn's rule)."""
    exact = R2Score()
    exact.update(torch.full((3,), 0.1), torch.full((3,), 0.1))
    assert float(exact.compute()) == 1.0
    wrong = R2Score()
    wrong.update(torch.zeros(3), torch.full((3,), 0.1))
    assert float(wrong.compute()) == 0.0


def test_r2_resume_mid_pass_is_bitwise():
    """R2 restored from `state_dict` continues to the same value, bitwise."""
    straight, first = R2Score(), R2Score()
    for metric in (straight, first):
        metric.update(torch.from_numpy(OUTPUT[:5]), torch.from_numpy(TARGET[:5]))
    straight.update(torch.from_numpy(OUTPUT[5:]), torch.from_numpy(TARGET[5:]))
    resumed = R2Score()
    resumed.load_state_dict(first.state_dict())
    resumed.update(torch.from_numpy(OUTPUT[5:]), torch.from_numpy(TARGET[5:]))
    assert torch.equal(resumed.compute(), straight.compute())


def test_r2_shape_mismatch_and_direction():
    """Shapes that would broadcast raise ValueError; larger R2 is better."""
    with pytest.raises(ValueError, match=r"r2: the output's shape \(4, 1\) differs"):
        R2Score().update(torch.zeros(4, 1), torch.zeros(4))
    assert R2Score.higher_is_better is True
