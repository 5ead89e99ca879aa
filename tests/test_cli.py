"""Tests of the `kiln` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kiln
from kiln.cli import main


def test_cli_info_reports_versions_and_device(capsys):
    """`kiln info` prints kiln's and torch's versions and the device 'auto' picks."""
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"kiln           {kiln.__version__}" in out
    assert "device (auto)  cpu" in out


def test_cli_version_and_help(capsys):
    """`kiln --version` prints the version; no command prints the help."""
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"kiln {kiln.__version__}"
    assert main([]) == 0
    assert "info" in capsys.readouterr().out


def test_cli_is_installed_as_a_command():
    """The package installs a `kiln` entry point that runs as a module too."""
    result = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "info"], capture_output=True, text=True, check=True
    )
    assert "torch" in result.stdout
