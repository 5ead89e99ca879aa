"""The documentation site (`mkdocs.yml`, `docs/`) stays true to the code.

Fast checks that need no MkDocs (`make docs` builds the site in strict mode): every page in the
navigation exists and every page is in it; every `::: name` of the API reference names an
object that exists, and every public name is documented somewhere; the events table lists
exactly `kiln.Event`; the options the command-line guide shows exist; and the ```python code
blocks of the pages run (```py blocks are shown only: other libraries' code, torchrun scripts).
The blocks of one page run in order in one namespace, in a temporary directory.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import re
import textwrap
from pathlib import Path

import pytest
import torch

import kiln
from kiln.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NAV_PAGE = re.compile(r"^\s*-\s*(?:[^:\n]+:\s*)?(\S+\.md)\s*$", re.MULTILINE)
API_ENTRY = re.compile(r"^::: ([\w.]+)\s*$", re.MULTILINE)
RUNNABLE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: Pages whose code blocks are excerpts, not programs (the benchmarks page quotes its scripts).
SHOWN_ONLY = {"benchmarks.md"}
#: Pages whose blocks take seconds (experiment directories, plots): run with `-m slow`.
SLOW_PAGES = {"checkpoints.md", "poutyne.md", "torchfusion.md"}
PUBLIC_MODULES = [
    "kiln",
    "kiln.callbacks",
    "kiln.metrics",
    "kiln.optim",
    "kiln.losses",
    "kiln.distributed",
    "kiln.presets",
    "kiln.checkpoint",
]


def nav_pages() -> list[str]:
    return NAV_PAGE.findall((ROOT / "mkdocs.yml").read_text())


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def resolve(dotted: str) -> object:
    """Find `a.b.c` as mkdocstrings does: the longest importable module, then attributes.

    A submodule wins over an attribute of the same name, as it does in Python.
    """
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    listed = nav_pages()
    assert len(listed) == len(set(listed)) > 20
    missing = [page for page in listed if not (DOCS / page).is_file()]
    assert missing == []
    unlisted = {str(path.relative_to(DOCS)) for path in pages()} - set(listed)
    assert unlisted == set()


def test_api_pages_name_existing_objects():
    entries = [
        name for path in DOCS.glob("api/*.md") for name in API_ENTRY.findall(path.read_text())
    ]
    assert len(entries) > 80
    for name in entries:
        resolve(name)  # raises for a name that no longer exists


def test_every_public_name_is_in_the_api_reference():
    documented = {
        name for path in DOCS.glob("api/*.md") for name in API_ENTRY.findall(path.read_text())
    }
    by_object = {id(resolve(name)) for name in documented}
    undocumented = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if name == "__version__" or type(obj).__name__ == "module":
                continue
            if id(obj) not in by_object:
                undocumented.append(f"{module_name}.{name}")
    assert undocumented == []


def test_the_events_table_lists_every_event():
    text = (DOCS / "guides" / "events.md").read_text()
    rows = re.findall(r"^\| `(\w+)`\s*\| `(on_\w+)`", text, re.MULTILINE)
    assert rows == [(event.name, event.value) for event in kiln.Event]


def test_the_events_page_copies_the_loop_from_the_docstring():
    docstring = inspect.getdoc(kiln.Event) or ""
    loop = textwrap.dedent(docstring.split("::\n\n", 1)[1].split("\n\n", 1)[0])
    text = (DOCS / "guides" / "events.md").read_text()
    assert f"```text\n{loop}\n```" in text


def test_cli_guide_shows_existing_options():
    text = (DOCS / "guides" / "cli.md").read_text()
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    known = {option for action in parser._actions for option in action.option_strings}
    for command in commands.values():
        known |= {option for action in command._actions for option in action.option_strings}
    shown = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text))
    assert shown
    assert shown - known == set()
    used = set(re.findall(r"(?:^|`)kiln ([a-z]+)", text, re.MULTILINE))
    assert {"info", "fit", "predict", "evaluate"} <= used <= {*commands, "fit"}


def test_migration_pages_show_both_sides():
    for path in DOCS.glob("migration/*.md"):
        text = path.read_text()
        assert text.count('<div class="grid" markdown>') >= 1, path.name
        assert "| " in text, f"{path.name} has no table of names"
        assert RUNNABLE.search(text), f"{path.name} has no kiln code that runs"


def runnable_pages() -> list[object]:
    return [
        pytest.param(path, marks=[pytest.mark.slow] if path.name in SLOW_PAGES else [])
        for path in pages()
        if path.name not in SHOWN_ONLY and RUNNABLE.search(path.read_text())
    ]


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda path: str(path.relative_to(DOCS)))
def test_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and fair to other tests
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        for number, code in enumerate(RUNNABLE.findall(page.read_text()), 1):
            compiled = compile(code, f"{page.name} block {number}", "exec")
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compiled, namespace)
    finally:
        torch.set_num_threads(threads)
