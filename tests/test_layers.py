"""kiln's layers hold: what `loop/` and `data/` import, who imports the trainer at run time, and
who touches a trainer's private attributes. An `ast` walk over `src/kiln`; nothing is imported.

Each rule is a function from a module's path and source to its offences, `path:line what`; each
has a counter-test that feeds it a small source breaking the rule, so a rule cannot pass by
seeing nothing. Imports under `if TYPE_CHECKING:` are for the type checker and do not count;
imports inside functions run, and count.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "kiln"

#: What `loop/` and `data/` may not import: the layers above them.
ABOVE_THE_LOOP = (
    "kiln.callbacks",
    "kiln.checkpoint",
    "kiln.saving",
    "kiln.tools",
    "kiln.presets",
    "kiln.tables",
    "kiln.cli",
    "kiln.estimator",
    "kiln.trainer",
)
#: Who may import `kiln.trainer` at run time: the trainer, the package, tools and applications.
TRAINER_USERS = (
    "src/kiln/trainer.py",
    "src/kiln/__init__.py",
    "src/kiln/cli.py",
    "src/kiln/estimator.py",
    "src/kiln/presets/",
    "src/kiln/tables/",
    "src/kiln/tools/",
)
#: The names a trainer goes by, outside its own class.
TRAINER_NAMES = ("trainer", "_trainer")

Offences = list[str]
Rule = Callable[[str, str], Offences]


def modules() -> Iterator[tuple[str, str]]:
    """Every module of src/kiln: its path from the repository root, and its source."""
    for path in sorted(SRC.rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path.read_text()


def module_name(path: str) -> str:
    """`src/kiln/loop/passes.py` -> `kiln.loop.passes`; a package's `__init__.py` -> its name."""
    parts = path.removeprefix("src/").removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_exports() -> dict[str, str]:
    """The names `kiln/__init__.py` imports, each to the module it comes from."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    return {
        alias.asname or alias.name: node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }


EXPORTS = package_exports()


def imported_module(base: str, name: str) -> str:
    """The module that `from base import name` reads: `base.name` when that is a module of
    ours; for a name of the `kiln` package, the module it re-exports it from; else `base`."""
    inner = SRC.joinpath(*f"{base}.{name}".split(".")[1:])
    if base.split(".")[0] == "kiln" and (inner.is_dir() or inner.with_suffix(".py").is_file()):
        return f"{base}.{name}"
    if base == "kiln" and name in EXPORTS:
        return EXPORTS[name]
    return base


def is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def run_time_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below `node`, but for the bodies of `if TYPE_CHECKING:` (their `else` runs)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from run_time_nodes(other)
            continue
        yield child
        yield from run_time_nodes(child)


def run_time_imports(path: str, source: str) -> list[tuple[int, str]]:
    """The modules that a module imports at run time, each once a line, in line order."""
    package = module_name(path)
    if not path.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    found: set[tuple[int, str]] = set()
    for node in run_time_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.update((node.lineno, imported_module(base, alias.name)) for alias in node.names)
    return sorted(found)


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def loop_and_data_imports(path: str, source: str) -> Offences:
    """Rule (a): `loop/` and `data/` import nothing from the layers above them, nor `kiln`."""
    if not path.startswith(("src/kiln/loop/", "src/kiln/data/")):
        return []
    return [
        f"{path}:{line} imports {module}"
        for line, module in run_time_imports(path, source)
        if module == "kiln" or within(module, ABOVE_THE_LOOP)
    ]


def trainer_imports(path: str, source: str) -> Offences:
    """Rule (b): below the trainer, no module imports `kiln.trainer` at run time."""
    if path.startswith(TRAINER_USERS):
        return []
    return [
        f"{path}:{line} imports {module}"
        for line, module in run_time_imports(path, source)
        if within(module, ("kiln.trainer",))
    ]


def is_a_trainer(node: ast.expr) -> bool:
    """`trainer`, `_trainer`, `self.trainer` or `self._trainer` (any object's, in fact)."""
    if isinstance(node, ast.Name):
        return node.id in TRAINER_NAMES
    return isinstance(node, ast.Attribute) and node.attr in TRAINER_NAMES


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_trainer_attribute(node: ast.AST) -> bool:
    """`trainer._name`, or `getattr(trainer, "_name")` (and `setattr`, `hasattr`, `delattr`)."""
    if isinstance(node, ast.Attribute):
        return is_a_trainer(node.value) and is_private(node.attr)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return False
    if node.func.id not in ("getattr", "setattr", "hasattr", "delattr") or len(node.args) < 2:
        return False
    name = node.args[1]
    return (
        is_a_trainer(node.args[0])
        and isinstance(name, ast.Constant)
        and isinstance(name.value, str)
        and is_private(name.value)
    )


def private_trainer_attributes(path: str, source: str) -> Offences:
    """Rule (c): outside trainer.py, nothing reads or writes a trainer's private attribute."""
    if path == "src/kiln/trainer.py":
        return []
    found = [node for node in ast.walk(ast.parse(source)) if private_trainer_attribute(node)]
    return [
        f"{path}:{node.lineno} {ast.unparse(node)}"
        for node in sorted(found, key=lambda node: (node.lineno, node.col_offset))
    ]


def offences_in_src(rule: Rule) -> Offences:
    return [offence for path, source in modules() for offence in rule(path, source)]


def test_loop_and_data_import_nothing_from_the_layers_above():
    offences = offences_in_src(loop_and_data_imports)
    assert not offences, (
        "loop/ and data/ must not import callbacks, persistence, tools, applications or the "
        "trainer at run time (a type-only import goes under `if TYPE_CHECKING:`):\n"
        + "\n".join(offences)
    )


def test_nothing_below_the_trainer_imports_it_at_run_time():
    offences = offences_in_src(trainer_imports)
    assert not offences, (
        "Only trainer.py, kiln/__init__.py, tools/ and the applications (cli.py, estimator.py, "
        "presets/, tables/) may import kiln.trainer at run time; elsewhere, import it under "
        "`if TYPE_CHECKING:` for annotations:\n" + "\n".join(offences)
    )


def test_no_module_but_the_trainer_touches_its_private_attributes():
    offences = offences_in_src(private_trainer_attributes)
    assert not offences, (
        "A trainer's private attributes belong to trainer.py; what another module needs, the "
        "trainer hands over or exposes:\n" + "\n".join(offences)
    )


TYPE_ONLY = """
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.trainer import Trainer
    from kiln.callbacks import Callback
else:
    from kiln.checkpoint.files import atomic_save
"""


def test_the_loop_rule_sees_an_import_from_above():
    """Counter-test: a callback import in loop/ is an offence; the same in callbacks/ is not."""
    source = "import torch\n\nfrom kiln.callbacks.base import Callback\n"
    assert loop_and_data_imports("src/kiln/loop/fake.py", source) == [
        "src/kiln/loop/fake.py:3 imports kiln.callbacks.base"
    ]
    relative = "def f():\n    from ..saving import recipe\n"
    assert loop_and_data_imports("src/kiln/data/fake.py", relative) == [
        "src/kiln/data/fake.py:2 imports kiln.saving.recipe"
    ]
    assert loop_and_data_imports("src/kiln/data/fake.py", "import kiln\n") == [
        "src/kiln/data/fake.py:1 imports kiln"
    ]
    assert loop_and_data_imports("src/kiln/loop/fake.py", TYPE_ONLY) == [
        "src/kiln/loop/fake.py:8 imports kiln.checkpoint.files"
    ]
    assert loop_and_data_imports("src/kiln/callbacks/fake.py", source) == []


def test_the_trainer_rule_sees_a_run_time_import_of_the_trainer():
    """Counter-test: at module level, in a function, through `from kiln import Trainer`."""
    source = (
        "from kiln.trainer import Trainer\n"
        "def make():\n"
        "    from kiln import Trainer\n"
        "    import kiln.trainer\n"
    )
    assert trainer_imports("src/kiln/callbacks/fake.py", source) == [
        "src/kiln/callbacks/fake.py:1 imports kiln.trainer",
        "src/kiln/callbacks/fake.py:3 imports kiln.trainer",
        "src/kiln/callbacks/fake.py:4 imports kiln.trainer",
    ]
    assert trainer_imports("src/kiln/callbacks/fake.py", TYPE_ONLY) == []
    assert trainer_imports("src/kiln/tools/fake.py", source) == []
    assert trainer_imports("src/kiln/checkpoint/run.py", "from kiln import __version__\n") == []


def test_the_private_attribute_rule_sees_a_private_read_or_write():
    """Counter-test: `trainer._x`, `self.trainer._x = ...`, `getattr(self._trainer, "_x")`."""
    source = (
        "def hook(self, trainer):\n"
        "    trainer._stepper.step()\n"
        "    self.trainer._hooks = []\n"
        "    return getattr(self._trainer, '_options'), trainer.state, trainer.__class__\n"
    )
    assert private_trainer_attributes("src/kiln/callbacks/fake.py", source) == [
        "src/kiln/callbacks/fake.py:2 trainer._stepper",
        "src/kiln/callbacks/fake.py:3 self.trainer._hooks",
        "src/kiln/callbacks/fake.py:4 getattr(self._trainer, '_options')",
    ]
    assert private_trainer_attributes("src/kiln/trainer.py", source) == []
    assert private_trainer_attributes("src/kiln/fake.py", "self._x = trainer.state\n") == []
