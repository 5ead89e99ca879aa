"""Recording how a model was built, and building it again from that record.

A *recipe* is plain data: the import path of a model class or builder function
(`"package.module:Name"`), the arguments it was called with, and, when the model cannot be
rebuilt by name, the reason why. `build` records one on the module it returns (PyBlaze's
`Configurable`, PytorchTrainer's `net_builder` and its arguments); `kiln.MLP` records its own.

What lives here: `build`, `recipe_of` (the recipe of any model, inferred for classes that need
no arguments), the checks that keep recipes plain data, and `rebuild_model`, which turns a recipe
read from a file back into a module. What does not: files (`saving.py`).

Safety: a file must never choose code to run. A recipe read from a file is only ever used to
look up a *class*, which must be a `torch.nn.Module` subclass before it is called; a builder
*function* named in a file is never looked up or called: the caller passes it as `builder=`.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

#: The attribute of a module that holds its recipe.
RECIPE_ATTRIBUTE = "_kiln_build"
CLASS, BUILDER = "class", "builder"
_PLAIN_SCALARS = (type(None), bool, int, float, str)
_T = TypeVar("_T")
_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


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
    found: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
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
        ValueError: If anything in it is not what `record_recipe` writes.
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
        raise ValueError(
            f"The model recipe in {source} is damaged or was not written by kiln: received "
            f"{recipe!r:.200}; expected {{'kind': 'class' or 'builder', 'target': "
            "'module:Name', 'args': [...], 'kwargs': {...}}. Pass the model: "
            "kiln.load(path, model=...)."
        )
    return {**recipe, "problem": recipe.get("problem")}


def rebuild_model(
    recipe: dict[str, Any], builder: Callable[..., Any] | None, source: str
) -> nn.Module:
    """Build the model a recipe read from `source` describes (a checked recipe).

    A given `builder` is called with the recorded arguments. Otherwise a recorded class is
    imported and called, after checking that it is a `torch.nn.Module` subclass; a recorded
    builder function is never called from its name.

    Raises:
        ValueError: If the model cannot be rebuilt; the message says what to pass instead.
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
        module = builder(*args, **kwargs)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"`builder` returned a {type(module).__name__}; expected a torch.nn.Module."
            )
        return module
    if recipe["problem"] is not None:
        raise ValueError(
            f"The model in {source} cannot be rebuilt: {recipe['problem']}. Pass a model built "
            "the same way: kiln.load(path, model=...); or, before training, create it with "
            "kiln.build(ModelClass, *args, **kwargs) so that its arguments are recorded."
        )
    if recipe["kind"] == BUILDER:
        raise ValueError(
            f"The model in {source} was made by the builder function {shown}, and kiln never "
            f"calls a function named in a file. Pass it: kiln.load(path, builder={shown}); the "
            "recorded arguments are applied."
        )
    cls = find_class(str(target), nn.Module, source, "model=")
    return cls(*args, **kwargs)


def find_class(target: Any, base: type[_T], source: str, instead: str) -> type[_T]:
    """Import the class `target` (`"module:Name"`) names, if and only if it subclasses `base`.

    Args:
        target: The import path, as read from a file.
        base: The class it must subclass before anything calls it.
        source: The file, for messages.
        instead: The `kiln.load` argument that avoids the lookup, for messages (`"model="`).

    Raises:
        ValueError: If `target` is no import path, cannot be imported, or is not a subclass of
            `base` (a function such as `os:system`, say): nothing named by it is called.

    Example:
        >>> import torch
        >>> find_class("torch.nn:Linear", torch.nn.Module, "a file", "model=")
        <class 'torch.nn.modules.linear.Linear'>
    """
    what = f"{base.__module__}.{base.__qualname__}"
    if not isinstance(target, str) or not _TARGET.match(target):
        raise ValueError(
            f"{source} names the class {target!r:.100}, which is not an import path like "
            f"'package.module:Name'. Pass the object yourself: kiln.load(path, {instead}...)."
        )
    module_name, qualname = target.split(":")
    shown = f"{module_name}.{qualname}"
    try:
        # Importing runs the module's top-level code, as `import` would; what it names is
        # only called once it is known to be a subclass of `base`.
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"The class {shown} recorded in {source} cannot be found ({error}). Install or "
            f"import the code that defines it, or pass the object: kiln.load(path, {instead}...)."
        ) from error
    if not (inspect.isclass(found) and issubclass(found, base)):
        raise ValueError(
            f"Refused to load {source}: it names {shown}, a {type(found).__name__}, where a "
            f"{what} subclass is expected, so kiln will not call it (a file must never choose "
            f"code to run). If you trust the file, pass the object: kiln.load(path, {instead}...)."
        )
    return found
