"""The auto preset's examples run, and reach their test scores (about 25 s in all: slow)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def number(pattern: str, out: str) -> float:
    found = re.search(pattern, out, re.MULTILINE)
    assert found, out
    return float(found.group(1))


@pytest.mark.slow
def test_breast_cancer_example_reaches_95_percent():
    out = run_example("auto_breast_cancer.py")
    assert number(r"^test accuracy: (\d+\.\d\d)%$", out) >= 95.0


@pytest.mark.slow
def test_diabetes_example_beats_a_linear_fit():
    out = run_example("auto_diabetes.py")
    assert "MESSAGE: Regression flags: [1]" in out
    assert re.search(r"^MESSAGE: name: .*diabetes / train score: ", out, re.MULTILINE), out
    assert number(r"^test R2: (-?\d+\.\d+)$", out) >= 0.55  # LinearRegression: 0.595


@pytest.mark.slow
def test_mixed_example_predicts_both_columns():
    out = run_example("auto_mixed.py")
    assert "MixedCriterion(kinds=['regression', 'binary'])" in out
    assert number(r"^test R2 \(progression\): (-?\d+\.\d+)$", out) >= 0.55
    assert number(r"^test accuracy \(progression > 140\): (\d+\.\d\d)%$", out) >= 70.0
