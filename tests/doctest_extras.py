"""A pytest plugin: a doctest that needs an optional extra which is not installed is skipped.

`make test` runs the examples of `src/kiln` as doctests (`--doctest-modules`), and some of them
need a package that only an extra installs (`pip install 'kiln[tensorboard]'`, ...). Such a doctest
declares nothing: it runs, and if it stops on a `ModuleNotFoundError` for one of the packages of
`EXTRAS`, raised by its own `import` or by kiln's (kiln imports extras where they are used, and
may wrap the error in a message that says how to install them), it is reported as skipped, with
the extra to install. Any other failure, an extra that is installed but broken included, fails.

The root `conftest.py` loads this plugin, so it applies to `pytest src/kiln` as well as `tests/`.
"""

from __future__ import annotations

import doctest
from collections.abc import Generator

import pytest
from _pytest.doctest import MultipleDoctestFailures

#: The optional packages, by import name, and the extra of pyproject.toml that installs each.
EXTRAS = {
    "matplotlib": "plots",
    "mlflow": "mlflow",
    "optuna": "optuna",
    "pyarrow": "parquet",
    "safetensors": "safetensors",
    "sklearn": "demo",
    "tensorboard": "tensorboard",
    "torchmetrics": "torchmetrics",
    "wandb": "wandb",
}


def missing_extra(error: BaseException) -> str | None:
    """Return the optional package whose absence raised `error`, or None if none did.

    Follows the chain of causes and contexts (kiln re-raises a missing extra as an ImportError
    that says how to install it) to a `ModuleNotFoundError` naming one of `EXTRAS` itself: a
    missing submodule, or a name missing from an installed extra, is a broken install, not an
    absent one.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name in EXTRAS:
            return current.name
        pending += [current.__cause__, current.__context__]
    return None


def first_exception(failure: BaseException) -> BaseException | None:
    """Return the exception a doctest stopped on, from pytest's report of its failure.

    Only the first failure counts (with `--doctest-continue-on-failure`, the later ones follow
    from it); a wrong output is no exception.
    """
    if isinstance(failure, MultipleDoctestFailures):
        failure = failure.failures[0]
    if isinstance(failure, doctest.UnexpectedException):
        return failure.exc_info[1]
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Run the test; turn a doctest's failure for a missing extra into a skip."""
    if not isinstance(item, pytest.DoctestItem):
        return (yield)
    try:
        return (yield)
    except (doctest.UnexpectedException, MultipleDoctestFailures) as failure:
        error = first_exception(failure)
        package = None if error is None else missing_extra(error)
        if package is None:
            raise
        reason = f"needs {package}, not installed: pip install 'kiln[{EXTRAS[package]}]'"
        # Reported at the doctest, as a skip marker is, rather than at this line.
        raise pytest.skip.Exception(reason, _use_item_location=True) from None
