"""Recording how a model was built, and building it again from that record.

A *recipe* is plain data: the import path of a model class or builder function
(`"package.module:Name"`), the arguments it was called with, and, when the model cannot be
rebuilt by name, the reason why. `build` records one on the module it returns; `kiln.MLP`
records its own.

What lives here: `build`, `recipe_of` (the recipe of any model, inferred for classes that need
no arguments), the checks that keep recipes plain data, and `rebuild_model`, which turns a recipe
read from a file back into a module. What does not: files (`saving/trainer_file.py`).

Safety: a file must never choose code to run. A recipe read from a file is only ever used to
look up a *class*, which must be a `torch.nn.Module` subclass before it is called; a builder
*function* named in a file is never looked up or called: the caller passes it as `builder=`.
Nor does a file cause an import: the class is looked up among the modules the program has
imported already (`sys.modules`, read without running anything) or the classes the caller
allows (`kiln.load(path, classes=[...])`). And sizes come before memory: given the weights, the
model is first built on the meta device, where it allocates nothing, and its shapes compared
with theirs, so a small file cannot declare a huge model that its weights do not back.
"""

from __future__ import annotations

import copy
import errno
import inspect
import re
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from kiln.checkpoint.files import CheckpointError

#: The attribute of a module that holds its recipe.
RECIPE_ATTRIBUTE = "_kiln_build"
CLASS, BUILDER = "class", "builder"
_PLAIN_SCALARS = (type(None), bool, int, float, str)
_T = TypeVar("_T")
_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class LoadHints:
    """How messages name the ways to give a loader what a file cannot choose by itself.

    Each is a call, with `{name}` where the class or function named in the file goes.
    """

    model: str = "kiln.load(path, model=...)"
    builder: str = "kiln.load(path, builder={name})"
    classes: str = "kiln.load(path, classes=[{name}])"


#: The hints of `kiln.load`.
KILN_LOAD = LoadHints()


def build(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> nn.Module:
    """Call `fn(*args, **kwargs)` and record on the model how it was built, for `kiln.load`.

    `fn` is a model class or a builder function defined at the top level of a module. The
    recorded import path and arguments travel in `trainer.save` files and `.safetensors`
    exports, so `kiln.load` can rebuild the model: a class by itself, a builder function only
    when passed again as `builder=` (a file never chooses a function to call).

    Args:
        fn: A `torch.nn.Module` subclass or a function returning a module.
        *args: Positional arguments for `fn`: plain data only (None, bool, int, float, str, and
            lists, tuples and string-keyed dicts of them), since they are written to files.
        **kwargs: Keyword arguments for `fn`, plain data likewise.

    Returns:
        The module `fn` returned, carrying its recipe.

    Raises:
        TypeError: If an argument is not plain data (the message names it), or `fn` does not
            return a `torch.nn.Module`.

    Example:
        >>> import torch, kiln
        >>> net = kiln.build(torch.nn.Linear, 4, out_features=2)
        >>> recipe = kiln.saving.recipe.recipe_of(net)
        >>> recipe["target"], recipe["args"], recipe["kwargs"]
        ('torch.nn:Linear', [4], {'out_features': 2})
    """
    name = getattr(fn, "__qualname__", repr(fn))
    for where, value in _named_arguments(fn, args, kwargs):
        check_plain(value, f"argument `{where}` of {name}")
    module = fn(*args, **kwargs)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"kiln.build: {name} returned a {type(module).__name__}; expected a "
            "torch.nn.Module. Pass a model class or a function that returns the model."
        )
    record_recipe(module, fn, args, kwargs)
    return module


def _named_arguments(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> list[tuple[str, Any]]:
    try:
        names = list(inspect.signature(fn).bind_partial(*args).arguments)
    except (TypeError, ValueError):  # no signature, or more arguments than it takes
        names = []
    positional = [
        (names[i] if i < len(names) and len(names) == len(args) else f"args[{i}]", value)
        for i, value in enumerate(args)
    ]
    return [*positional, *kwargs.items()]


def check_plain(value: Any, where: str) -> None:
    """Raise a `TypeError` naming `where` unless `value` is plain data that files can hold.

    Plain data is None, bool, int, float, str, and lists, tuples and string-keyed dicts of them.

    Example:
        >>> check_plain({"hidden": [8, 8], "act": "relu"}, "kwargs")
        >>> check_plain({"act": print}, "kwargs")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: kwargs['act'] is a builtin_function_or_method, not plain data. ...
    """
    problem = _plain_problem(value, where)
    if problem is not None:
        raise TypeError(
            f"{problem}. Build arguments are written to the saved file, which holds only None, "
            "bool, int, float, str and lists, tuples and string-keyed dicts of them: pass plain "
            "values (int(x), a name instead of an object), or build the model yourself and give "
            "it to kiln.load(path, model=...)."
        )


def _plain_problem(value: Any, where: str) -> str | None:
    if type(value) in _PLAIN_SCALARS:  # exact types: a numpy float or an enum is not plain
        return None
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            problem = _plain_problem(item, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{where} has the key {key!r} ({type(key).__name__}), but keys must be str"
            problem = _plain_problem(item, f"{where}[{key!r}]")
            if problem is not None:
                return problem
        return None
    return f"{where} is a {type(value).__name__}, not plain data"


def record_recipe(
    module: nn.Module, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    """Record on `module` that `fn(*args, **kwargs)` builds it; never raises.

    Arguments that are not plain data, or an `fn` that cannot be imported by name (a lambda, a
    function defined inside another), are recorded as a problem that `rebuild_model` reports.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 1)
        >>> record_recipe(net, torch.nn.Linear, (3, 1), {})
        >>> recipe_of(net)["args"]
        [3, 1]
        >>> record_recipe(net, lambda: torch.nn.Linear(3, 1), (), {})
        >>> recipe_of(net)["problem"].startswith("it was built by <lambda>, which cannot be found")
        True
    """
    kind = CLASS if inspect.isclass(fn) and issubclass(fn, nn.Module) else BUILDER
    target = import_path(fn)
    problems = (
        _plain_problem(v, f"its argument `{w}`") for w, v in _named_arguments(fn, args, kwargs)
    )
    problem = next((p for p in problems if p is not None), None)
    if target is None:
        problem = (
            f"it was built by {getattr(fn, '__qualname__', repr(fn))}, which cannot be found "
            "by an import path (a lambda, or defined inside a function)"
        )
    recipe: dict[str, Any] = {"kind": kind, "target": target, "args": [], "kwargs": {}}
    if problem is None:  # copied, so that later changes to a list passed in do not leak in
        recipe.update(args=copy.deepcopy(list(args)), kwargs=copy.deepcopy(dict(kwargs)))
    # A plain attribute: nn.Module keeps it in __dict__, outside the state_dict.
    setattr(module, RECIPE_ATTRIBUTE, {**recipe, "problem": problem})


def import_path(obj: Any) -> str | None:
    """Return `"module:qualname"` for a class or function found by that path, else `None`.

    The shortest already-imported parent package that exposes the same object is preferred, so
    paths survive moves inside a package: `torch.nn:Linear`, `kiln:MLP`.

    Example:
        >>> import torch
        >>> import_path(torch.nn.Linear), import_path(lambda: 0)
        ('torch.nn:Linear', None)
    """
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    if _find_loaded(module, qualname) is not obj:  # shadowed or redefined since
        return None
    parts = module.split(".")
    for length in range(1, len(parts)):
        parent = ".".join(parts[:length])
        if _find_loaded(parent, qualname) is obj:
            return f"{parent}:{qualname}"
    return f"{module}:{qualname}"


def _find_loaded(module_name: str, qualname: str) -> Any:
    """What `module_name:qualname` names among the modules imported already, else `None`.

    Nothing is imported and no code runs: modules and classes are read through their
    `__dict__`, never `getattr` (a module's `__getattr__` may import on demand).
    """
    found: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        if not isinstance(found, (types.ModuleType, type)):
            return None
        found = vars(found).get(part)
    return found


def recipe_of(model: nn.Module) -> dict[str, Any]:
    """Return how to rebuild `model`: its recorded recipe, or its class if it needs no arguments.

    Example:
        >>> import torch
        >>> recipe_of(torch.nn.ReLU())["target"]
        'torch.nn:ReLU'
        >>> recipe_of(torch.nn.Linear(2, 1))["problem"]
        'torch.nn.Linear needs the arguments in_features, out_features, which were not recorded'
    """
    inner = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    inner = getattr(inner, "module", inner) if _is_data_parallel(inner) else inner
    recorded = inner.__dict__.get(RECIPE_ATTRIBUTE)
    if isinstance(recorded, dict):
        return dict(recorded)
    cls = type(inner)
    target = import_path(cls)
    problem = None
    if target is None:
        problem = f"its class {cls.__qualname__} cannot be found by an import path"
    else:
        required = _required_parameters(cls)
        shown = target.replace(":", ".")
        if required:
            problem = f"{shown} needs the arguments {', '.join(required)}, which were not recorded"
        elif _takes_parts(cls) and any(True for _ in inner.parameters()):
            # nn.Sequential(*layers) and the like: built without arguments, it would be empty.
            problem = f"{shown} takes its layers as arguments, which were not recorded"
    return {"kind": CLASS, "target": target, "args": [], "kwargs": {}, "problem": problem}


def _is_data_parallel(model: nn.Module) -> bool:
    return isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))


def _takes_parts(cls: type) -> bool:
    """Whether the class's constructor takes any number of positional parts (`*args`)."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def _required_parameters(cls: type) -> list[str]:
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return ["(unknown)"]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty and p.kind not in variadic
    ]


def check_recipe(recipe: Any, source: str) -> dict[str, Any]:
    """Return `recipe`, read from `source`, after checking that it has a recipe's shape.

    Raises:
        CheckpointError: If anything in it is not what `record_recipe` writes (a damaged
            file, or one not written by kiln); a `ValueError` too.
    """
    valid = (
        isinstance(recipe, dict)
        and recipe.get("kind") in (CLASS, BUILDER)
        and (recipe.get("target") is None or _TARGET.match(str(recipe.get("target"))))
        and type(recipe.get("args")) is list
        and type(recipe.get("kwargs")) is dict
        and (recipe.get("problem") is None or isinstance(recipe.get("problem"), str))
        and _plain_problem([recipe.get("args"), recipe.get("kwargs")], "args") is None
    )
    if not valid:
        raise CheckpointError(
            errno.EINVAL,
            f"The model recipe in {source} is damaged or was not written by kiln: received "
            f"{recipe!r:.200}; expected {{'kind': 'class' or 'builder', 'target': "
            "'module:Name', 'args': [...], 'kwargs': {...}}. Pass the model: "
            "kiln.load(path, model=...).",
        )
    return {**recipe, "problem": recipe.get("problem")}


def rebuild_model(
    recipe: dict[str, Any],
    builder: Callable[..., Any] | None,
    source: str,
    *,
    classes: Iterable[type] = (),
    weights: Mapping[str, Any] | None = None,
    hints: LoadHints = KILN_LOAD,
) -> nn.Module:
    """Build the model a recipe read from `source` describes (a checked recipe).

    A given `builder` is called with the recorded arguments. Otherwise a recorded class is
    looked up (`find_class`: among the classes the program has imported, or `classes`; nothing
    is imported) and called, after checking that it is a `torch.nn.Module` subclass; a recorded
    builder function is never called from its name.

    Args:
        recipe: The recipe, checked by `check_recipe`.
        builder: The function (or class) that builds the model, passed by the caller.
        source: The file, for messages.
        classes: Classes the caller allows the file to name, besides those already imported.
        weights: The weights the model will receive: when given, the model is first built on
            the meta device (no memory) and its shapes compared with theirs (`build_to_fit`).
        hints: How messages name the loader's arguments.

    Raises:
        ValueError: If the model cannot be rebuilt, or (with `weights`) does not fit them; the
            message says what to pass instead.
        TypeError: If `builder` returns something other than a module.

    Example:
        >>> import kiln
        >>> recipe = check_recipe(recipe_of(kiln.MLP(2, [4], 1)), "a file")
        >>> rebuild_model(recipe, None, "a file")[0]
        Linear(in_features=2, out_features=4, bias=True)
    """
    target, args, kwargs = recipe["target"], recipe["args"], recipe["kwargs"]
    shown = None if target is None else target.replace(":", ".")
    if builder is not None:
        return build_to_fit(lambda: builder(*args, **kwargs), weights, source)
    if recipe["problem"] is not None:
        raise ValueError(
            f"The model in {source} cannot be rebuilt: {recipe['problem']}. Pass a model built "
            f"the same way: {hints.model}; or, before training, create it with "
            "kiln.build(ModelClass, *args, **kwargs) so that its arguments are recorded."
        )
    if recipe["kind"] == BUILDER:
        raise ValueError(
            f"The model in {source} was made by the builder function {shown}, and kiln never "
            f"calls a function named in a file. Pass it: {hints.builder.format(name=shown)}; "
            "the recorded arguments are applied."
        )
    cls = find_class(str(target), nn.Module, source, hints.model, classes, hints.classes)
    return build_to_fit(lambda: cls(*args, **kwargs), weights, source)


def build_to_fit(
    make: Callable[[], Any], weights: Mapping[str, Any] | None, source: str
) -> nn.Module:
    """Return `make()`, a model for `weights`, after checking on the meta device that they fit.

    With `weights`, `make` is called once under `torch.device("meta")`, where parameters take
    no memory, and the shapes compared with the weights' before the real call: a recipe that
    declares more than the file's weights hold (a `Linear(40000, 40000)` beside a few hundred
    values) is refused before anything is allocated. A constructor that cannot run on the
    meta device (one that reads its own values) is called for real, and compared after.

    Raises:
        ValueError: If the model's keys or shapes differ from the weights' (named).
        TypeError: If `make` returns something other than a module.

    Example:
        >>> import torch
        >>> build_to_fit(lambda: torch.nn.Linear(40000, 40000), {"weight": torch.ones(3, 4),
        ...              "bias": torch.ones(3)}, "a file")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: The weights in a file do not fit Linear: ... (40000, 40000) in the model...
    """
    from kiln.checkpoint.run import check_model_state  # the checkpoint layer, below this one

    if weights is not None:
        try:
            with torch.device("meta"):
                outline = make()
        except Exception:  # needs real values: checked once built for real, as before
            outline = None
        if isinstance(outline, nn.Module):
            check_model_state(outline, dict(weights), source)
    module = make()
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"The model builder returned a {type(module).__name__}; expected a torch.nn.Module."
        )
    return module


def allowed_classes(classes: Any) -> tuple[type, ...]:
    """Return the classes a caller allows files to name (`kiln.load(..., classes=...)`), checked.

    Raises:
        TypeError: If `classes` is not an iterable of classes (one class alone is accepted).

    Example:
        >>> import torch
        >>> allowed_classes([torch.nn.Linear]), allowed_classes(torch.nn.Linear)
        ((<class 'torch.nn.modules.linear.Linear'>,), (<class 'torch.nn.modules.linear.Linear'>,))
    """
    if classes is None:
        return ()
    items = (classes,) if inspect.isclass(classes) else classes
    try:
        result = tuple(items)
    except TypeError:
        result = (classes,)
    for item in result:
        if not inspect.isclass(item):
            raise TypeError(
                f"`classes` lists the classes a file may name (the model's class, a custom "
                f"optimizer's): classes themselves, such as classes=[MyNet]; received "
                f"{item!r:.100}, a {type(item).__name__}."
            )
    return result


def find_class(
    target: Any,
    base: type[_T],
    source: str,
    instead: str,
    classes: Iterable[type] = (),
    allow: str = KILN_LOAD.classes,
) -> type[_T]:
    """Find the class `target` (`"module:Name"`) names, if and only if it subclasses `base`.

    Nothing is imported: the class is one of `classes` (matched by its import path, or by its
    name when the file was written by a script, `__main__`), or is found in a module the
    program has imported already, read without running any of its code.

    Args:
        target: The import path, as read from a file.
        base: The class it must subclass before anything calls it.
        source: The file, for messages.
        instead: The call that avoids the lookup, for messages (`"kiln.load(path, model=...)"`).
        classes: Classes the caller allows, besides those already imported.
        allow: The call that allows a class, with `{name}` for it, for messages.

    Raises:
        ValueError: If `target` is no import path, names nothing this program has imported or
            allowed, or is not a subclass of `base` (a function such as `os:system`, say):
            nothing named by it is called, and no module is imported.

    Example:
        >>> import torch
        >>> find_class("torch.nn:Linear", torch.nn.Module, "a file", "model=")
        <class 'torch.nn.modules.linear.Linear'>
    """
    what = f"{base.__module__}.{base.__qualname__}"
    if not isinstance(target, str) or not _TARGET.match(target):
        raise ValueError(
            f"{source} names the class {target!r:.100}, which is not an import path like "
            f"'package.module:Name'. Pass the object yourself: {instead}."
        )
    module_name, qualname = target.split(":")
    shown = f"{module_name}.{qualname}"
    classes = tuple(classes)
    found = _given_class(classes, target)
    if found is None:
        found = _find_loaded(module_name, qualname)
    if found is None:
        found = _given_class(classes, target, source)
    if found is None:
        name = qualname.split(".")[0]
        if module_name == "__main__":
            where = "defined by the script that saved the file, which this program does not have"
            first = "define or import it in this program, then allow it"
        elif module_name in sys.modules:
            where = f"but {module_name}, as this program imported it, has none (renamed or moved?)"
            first = "allow the class it now is"
        else:
            where = f"from the module {module_name}, which this program has not imported"
            first = f"import it before loading (from {module_name} import {name}), or allow it"
        raise ValueError(
            f"{source} names the class {shown}, {where}; kiln never imports a module because "
            f"a file names it (importing runs the module's code). If you trust the file, "
            f"{first}: {allow.format(name=name)}; or pass the object: {instead}."
        )
    if not (inspect.isclass(found) and issubclass(found, base)):
        raise ValueError(
            f"Refused to load {source}: it names {shown}, a {type(found).__name__}, where a "
            f"{what} subclass is expected, so kiln will not call it (a file must never choose "
            f"code to run). If you trust the file, pass the object: {instead}."
        )
    return found


def _given_class(classes: tuple[type, ...], target: str, source: str | None = None) -> Any:
    """The class of `classes` that `target` names: by import path; with `source`, by name.

    By name alone, a file saved by a script (`__main__:Net`) finds the class `Net` that the
    caller passes from wherever it lives now.
    """
    if source is None:
        exact = (
            cls
            for cls in classes
            if target in (import_path(cls), f"{cls.__module__}:{cls.__qualname__}")
        )
        return next(exact, None)
    qualname = target.split(":")[1]
    named = list(dict.fromkeys(cls for cls in classes if cls.__qualname__ == qualname))
    if len(named) > 1:
        raise ValueError(
            f"{source} names the class {target.replace(':', '.')}, and `classes` holds "
            f"{len(named)} classes of that name ({', '.join(c.__module__ for c in named)}). "
            "Pass only the one the file was saved with."
        )
    return named[0] if named else None
