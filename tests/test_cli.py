"""Tests of the `kiln` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kiln
from kiln import cli
from kiln.cli import build_parser, main


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


def test_cli_help_lists_every_command_with_examples(capsys):
    """`kiln --help` names every command and shows examples."""
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "fit", "predict", "evaluate"):
        assert f"    {command} " in out
    assert "kiln fit data.csv --target label" in out


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("fit", ["--target COLUMN", "--epochs EPOCHS", "by the table's size", "--batch-size",
                 "(default: 256)", "--lr LR", "--hidden [WIDTH ...]",
                 "--members MEMBERS", "--val VAL", "(default: 0.2)", "--seed SEED",
                 "(default: 0)", "--device",
                 "(default: auto)", "--resume", "--kind COLUMN=KIND", "--ignore COLUMN",
                 "examples:\n  kiln fit houses.csv --target price"]),
        ("predict", ["run", "data", "--output OUTPUT", "(default: -)", "TARGET_proba_LABEL",
                     "example:\n  kiln predict runs/houses"]),
        ("evaluate", ["run", "data", "--json", "ROC AUC", "example:\n  kiln evaluate"]),
    ],
)  # fmt: skip
def test_cli_subcommand_help_is_complete(command, expected, capsys, monkeypatch):
    """Each subcommand's help has its arguments, their defaults and an example."""
    monkeypatch.setenv("COLUMNS", "200")  # no help line wrapped inside what is matched
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out, text


def test_cli_errors_are_one_line_and_traceback_shows_them(tmp_path, capsys):
    """An expected error prints `kiln: error: ...` with status 2; `--traceback` raises it."""
    (tmp_path / "empty.csv").write_text("")
    assert main(["evaluate", str(tmp_path), str(tmp_path / "empty.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ")
    assert err.count("\n") == 1
    from kiln.tables.read import TableError

    with pytest.raises(TableError, match="is empty"):
        main(["--traceback", "fit", str(tmp_path / "empty.csv"), "--target", "y"])


def test_run_as_the_program_it_spares_the_exit_collection(monkeypatch, capsys):
    frozen = []
    monkeypatch.setattr(cli.gc, "freeze", lambda: frozen.append(True))
    assert cli.main(["info"]) == 0  # called from Python: the caller's objects stay collectable
    assert frozen == []
    monkeypatch.setattr(sys, "argv", ["kiln", "info"])
    assert cli.main() == 0
    assert frozen == [True]
    monkeypatch.setattr(sys, "argv", ["kiln", "fit", "no-such-file.csv", "--target", "y"])
    assert cli.main() == 2  # errors too
    assert frozen == [True, True]
    capsys.readouterr()


def test_fit_options_default_to_the_table_recipes_own():
    """`kiln fit` with no options trains what `TableOptions()` describes."""
    from kiln.tables.train import TableOptions

    args = build_parser().parse_args(["fit", "data.csv", "--target", "y"])
    defaults = TableOptions()
    assert tuple(args.hidden) == defaults.hidden
    for name in ("members", "drop", "val", "seed", "batch_size", "epochs", "lr", "device"):
        assert getattr(args, name) == getattr(defaults, name), name
