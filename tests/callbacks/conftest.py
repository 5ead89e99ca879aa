"""Callback tests run in their own scratch directory."""

import pytest


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path, monkeypatch):
    """Relative paths without a trainer directory land in the test's own directory."""
    monkeypatch.chdir(tmp_path)
