import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
def test_digits_cnn_demo_trains_stops_early_and_reaches_97_percent():
    """The README's demo trains, stops early and reaches at least 97% test accuracy."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "digits_cnn.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    accuracy = re.search(r"^test accuracy: (\d+\.\d\d)%$", out, re.MULTILINE)
    assert accuracy, out
    assert float(accuracy.group(1)) >= 97.0, out
    assert re.search(r"^Epoch \d+/\d+  ", out, re.MULTILINE), out
    assert re.search(r"^Stopped after epoch \d+: early stopping", out, re.MULTILINE), out
