"""`tests/doctest_extras.py`: a doctest needing a missing optional extra is skipped, not failed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doctest_extras import missing_extra

ROOT = Path(__file__).resolve().parents[1]

#: A pytest plugin that makes tensorboard look not installed: `find_spec` finds nothing, and
#: `import tensorboard` raises ModuleNotFoundError, as without the package.
HIDE_TENSORBOARD = """
import sys
from importlib.machinery import PathFinder


class Hidden(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] == "tensorboard":
            return None
        return super().find_spec(name, path, target)


sys.meta_path[sys.meta_path.index(PathFinder)] = Hidden
"""


def clean_environment() -> dict[str, str]:
    """This process's environment without pytest's variables (PYTEST_ADDOPTS, xdist's, ...)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")}


def raised(make: type[BaseException], *args: object, **kwargs: object) -> BaseException:
    try:
        raise make(*args, **kwargs)
    except BaseException as error:
        return error


def reraised(error: BaseException, suppress: bool) -> BaseException:
    """kiln's way: an ImportError that says how to install, `from error` or `from None`."""
    try:
        try:
            raise error
        except ImportError as inner:
            if suppress:
                raise ImportError("pip install 'kiln[tensorboard]'") from None
            raise ImportError("pip install 'kiln[tensorboard]'") from inner
    except ImportError as outer:
        return outer


@pytest.mark.parametrize("suppress", [False, True])
def test_the_absent_package_is_found_behind_kiln_message(suppress):
    absent = raised(ModuleNotFoundError, "No module named 'tensorboard'", name="tensorboard")
    assert missing_extra(absent) == "tensorboard"
    assert missing_extra(reraised(absent, suppress)) == "tensorboard"


@pytest.mark.parametrize(
    ("kind", "message", "name"),
    [
        (ModuleNotFoundError, "No module named 'kiln.nothing'", "kiln.nothing"),
        (ModuleNotFoundError, "No module named 'tensorboard.compat'", "tensorboard.compat"),
        (ImportError, "cannot import name 'SummaryWriter' from 'tensorboard'", "tensorboard"),
    ],
)
def test_other_import_errors_are_not_a_missing_extra(kind, message, name):
    """Counter-test: an absent module of ours, and an extra installed but broken, still fail."""
    error = raised(kind, message, name=name)
    assert missing_extra(error) is None
    assert missing_extra(reraised(error, suppress=False)) is None


def test_an_error_that_is_no_import_error_is_not_a_missing_extra():
    assert missing_extra(raised(ValueError, "a wrong value")) is None


def test_the_tensorboard_doctest_is_skipped_without_tensorboard(tmp_path):
    """Run the doctests of the TensorBoard callback's module with tensorboard hidden: the one
    that writes event files is skipped, naming the extra; the one that does not still passes.
    """
    (tmp_path / "hide_tensorboard.py").write_text(HIDE_TENSORBOARD)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "hide_tensorboard", "-p", "no:cacheprovider"]
        + ["-q", "-rs", "src/kiln/callbacks/tensorboard.py"],
        cwd=ROOT,
        env={**clean_environment(), "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "1 passed, 1 skipped" in out, out
    assert "SKIPPED [1] src/kiln/callbacks/tensorboard.py:" in out, out
    assert "needs tensorboard, not installed: pip install 'kiln[tensorboard]'" in out, out
