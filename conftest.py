"""pytest's plugins for the whole repository: the doctests of `src/kiln` as well as `tests/`."""

pytest_plugins = ["tests.doctest_extras"]
