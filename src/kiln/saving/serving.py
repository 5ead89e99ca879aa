"""Exporting a model for serving: an ONNX file, or a `torch.export` program (`.pt2`).

What lives here: `export_program`, which traces the model on an example input with a dynamic
batch size and writes the traced graph, with its weights, atomically; and `example_of`, the
few rows of a batch's inputs the trainer keeps as that example. What does not: the weights
alone (`export.py`), or a whole trainer (`trainer_file.py`).

Imports of `torch.export`, `torch.onnx` and `onnxscript` happen at export time only.
"""

from __future__ import annotations

import contextlib
import copy
import io
import linecache
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from kiln.checkpoint.files import atomic_write
from kiln.data.batch import split_batch

#: What `export_program` writes, by the file's suffix.
SERVING_SUFFIXES = (".onnx", ".pt2")
#: Rows of a batch kept as the example input (two: torch specializes a batch size of 1).
EXAMPLE_ROWS = 2

_TORCH_DIR = os.path.dirname(torch.__file__)


def example_of(batch: Any) -> Any:
    """Return the first rows of a batch's inputs, detached copies, or `None` if it has none.

    The batch is read the way the default step methods read it (`x`, `(x, y)`, `(x, w, y)`);
    the inputs are a tensor, a tuple or list of tensors, or a dict of tensors. Anything else
    (a batch only the model's own `training_step` understands) gives `None`.

    Example:
        >>> import torch
        >>> example = example_of((torch.ones(32, 3), torch.zeros(32)))
        >>> tuple(example.shape)
        (2, 3)
    """
    try:
        inputs, _, _ = split_batch(batch)
    except ValueError:
        return None
    return _map_tensors(inputs, lambda tensor: tensor[:EXAMPLE_ROWS].detach().clone())


def export_program(
    model: nn.Module,
    path: str | os.PathLike[str],
    example: Any,
    postproc: Callable[[Tensor], Tensor] | None = None,
) -> Path:
    """Trace `model` on `example` and write the graph with its weights, for serving.

    The suffix picks the format: `.onnx` writes an ONNX file (`torch.onnx.export`; run it with
    `onnxruntime`, inputs named after the parameters of `model.forward`, the output `output`
    for a model returning one tensor); `.pt2` writes a `torch.export` program
    (`torch.export.save`; `torch.export.load(path).module()(x)` runs it, without kiln or the
    model's class). The first dimension of every input is the batch, left dynamic: the file
    takes any batch size. The graph is traced on the CPU in eval mode and in the weights' own
    precision (no autocast); `model` itself is left as it was.

    Args:
        model: The network.
        path: The file to write (missing directories are created).
        example: An input the model takes: a tensor, a tuple or list of tensors (positional
            inputs) or a dict of them (keyword inputs), each with the batch first. Its values
            do not matter, its shapes and dtypes do.
        postproc: Applied to the model's output inside the graph (the loss's post-processing,
            such as a sigmoid), or `None` for the raw output.

    Returns:
        The path written.

    Raises:
        ValueError: If the suffix is neither `.onnx` nor `.pt2`, if `example` holds anything
            but tensors with a batch dimension, or if the model cannot be traced: the message
            names the module and the line, and why (data-dependent control flow, a fixed batch
            size, ...).
        ImportError: For `.onnx` without the `onnxscript` and `onnx` packages.

    Example:
        >>> import tempfile, torch, kiln
        >>> path = export_program(kiln.MLP(4, [8], 2), tempfile.mkdtemp() + "/net.pt2",
        ...                       torch.randn(2, 4))
        >>> torch.export.load(path).module()(torch.randn(5, 4)).shape
        torch.Size([5, 2])
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SERVING_SUFFIXES:
        raise ValueError(
            f"Cannot export a program to {path}: its suffix {path.suffix!r} names no serving "
            f"format. Use {' or '.join(SERVING_SUFFIXES)} (ONNX, or a torch.export program)."
        )
    args, kwargs = _call_inputs(example)
    if suffix == ".onnx":
        _check_onnx_installed()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _traceable(model) as served:
        program, dynamic_shapes = _trace(served, args, kwargs, postproc)
    if suffix == ".pt2":
        return atomic_write(path, lambda file: torch.export.save(program, file))
    return _write_onnx(program, args, kwargs, dynamic_shapes, path)


def _call_inputs(example: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The example as `model(*args, **kwargs)` takes it, on the CPU, with at least 2 rows."""
    args: tuple[Any, ...]
    if isinstance(example, Mapping):
        args, kwargs = (), dict(example)
    elif isinstance(example, (tuple, list)):
        args, kwargs = tuple(example), {}
    else:
        args, kwargs = (example,), {}
    leaves = _leaves((args, kwargs))
    wrong = [leaf for leaf in leaves if not isinstance(leaf, Tensor) or leaf.dim() == 0]
    if wrong or not leaves:
        received = type(wrong[0]).__name__ if wrong else "no tensor"
        if wrong and isinstance(wrong[0], Tensor):
            received = "a 0-dim tensor"
        raise ValueError(
            f"The example input for export must be tensors with the batch first (a tensor, a "
            f"tuple or list of them, or a dict of them); it holds {received}. Pass "
            "`example=` as you would pass inputs to `trainer.predict`."
        )
    sizes = {int(leaf.shape[0]) for leaf in leaves}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"The example input's tensors must share one non-zero batch size (the first "
            f"dimension); they have {sorted(sizes)}."
        )
    # A batch of one would be traced as a constant 1: two rows keep it a variable.
    repeat = sizes.pop() < EXAMPLE_ROWS

    def prepare(tensor: Tensor) -> Tensor:
        tensor = tensor.detach().cpu().clone()  # a clone: a normal tensor, not an inference one
        return torch.cat([tensor] * EXAMPLE_ROWS) if repeat else tensor

    return _map_tensors(args, prepare), _map_tensors(kwargs, prepare)


@contextlib.contextmanager
def _traceable(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode on the CPU: itself when it is there, else a copy."""
    on_cpu = all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    served = model if on_cpu else copy.deepcopy(model).cpu()
    training = served.training
    served.eval()
    try:
        yield served
    finally:
        served.train(training)


def _trace(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    postproc: Callable[[Tensor], Tensor] | None,
) -> tuple[Any, Any]:
    """`torch.export.export` with a dynamic batch; its failures explained."""
    import torch.export

    batch = torch.export.Dim("batch")
    dynamic: Any = _map_tensors((args, kwargs), lambda _: {0: batch})
    # Keyword inputs: by name (the example is either positional or keyword, never both).
    dynamic_shapes = dynamic[1] if kwargs else dynamic[0]
    hook = None
    if postproc is not None:  # inside the graph: the hook's output replaces the model's
        hook = model.register_forward_hook(lambda _module, _inputs, output: postproc(output))
    try:
        # torch prints the partial graph of a failed trace: the message below replaces it.
        with _quiet(), contextlib.redirect_stderr(io.StringIO()):
            program = torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes)
    except Exception as error:  # any failure of the tracer: say where, and why
        raise ValueError(_explain(model, error)) from None
    finally:
        if hook is not None:
            hook.remove()
    return program, dynamic_shapes


def _explain(model: nn.Module, error: Exception) -> str:
    """A message that names the module, the line and the cause of a failed trace."""
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    where = _user_frame(error.__traceback__) or f"{type(model).__name__}.forward"
    text = str(error)
    if isinstance(error, GuardOnDataDependentSymNode) or "data-dependent" in text:
        return (
            f"Cannot export {type(model).__name__}: data-dependent control flow in {where}. A "
            "branch or a Python number taken from a tensor's values (`if x.sum() > 0:`, "
            "`int(x.max())`) cannot be part of a graph that runs for any input. Compute both "
            "branches and pick with `torch.where`, or use `torch.cond`; or keep the check out "
            "of `forward`."
        )
    if "Constraints violated" in text or "specialized" in text:
        return (
            f"Cannot export {type(model).__name__} with a dynamic batch size: {where} fixes "
            "the batch size (a reshape or a view to a constant number of rows, for instance). "
            "Use -1 or `x.shape[0]` for the batch dimension instead."
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    return (
        f"Cannot export {type(model).__name__}: torch.export failed in {where} with "
        f"{type(error).__name__}: {first} Check that the example input is what `forward` "
        "takes (pass `example=`), or run `torch.export.export` on the model for torch's report."
    )


def _user_frame(traceback: TracebackType | None) -> str | None:
    """`Class.method (file:line: code)` of the innermost module method outside torch."""
    found = None
    while traceback is not None:
        frame, code = traceback.tb_frame, traceback.tb_frame.f_code
        owner = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None
        filename = code.co_filename
        ours = filename == __file__ or filename.startswith(_TORCH_DIR)
        if isinstance(owner, nn.Module) and not ours:
            line = linecache.getline(filename, traceback.tb_lineno).strip()
            shown = f": `{line}`" if line else ""  # no source for code given as a string
            where = f"{filename}:{traceback.tb_lineno}{shown}"
            found = f"{type(owner).__name__}.{code.co_name} ({where})"
        traceback = traceback.tb_next
    return found


def _check_onnx_installed() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Exporting to .onnx needs the onnx and onnxscript packages: `pip install onnx "
            "onnxscript` (or `pip install kiln[onnx]`, which adds onnxruntime to run the file); "
            "or export to .pt2 instead."
        ) from error


def _write_onnx(
    program: Any, args: tuple[Any, ...], kwargs: dict[str, Any], dynamic_shapes: Any, path: Path
) -> Path:
    output = program.module()(*args, **kwargs)
    names = ["output"] if isinstance(output, Tensor) else None
    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                program,
                args,
                kwargs=kwargs,
                dynamic_shapes=dynamic_shapes,
                output_names=names,
                verbose=False,
            )
    except Exception as error:  # the graph holds an operation ONNX cannot express
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"Cannot translate the traced model into ONNX: {type(error).__name__}: {first} "
            "Export to .pt2 instead (torch.export), which holds every torch operation."
        ) from None
    if onnx_program is None:  # torch returns the program when no file is given
        raise ValueError("torch.onnx.export returned no ONNX program.")
    data = onnx_program.model_proto.SerializeToString()
    return atomic_write(path, lambda file: file.write(data))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Without torch's own deprecation warnings and the exporter's progress logs."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.fx.experimental")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # Several inputs share the batch dimension: ONNX names it once, and says so.
        warnings.filterwarnings("ignore", "# The axis name", UserWarning)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _map_tensors(tree: Any, fn: Callable[[Tensor], Any]) -> Any:
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {key: _map_tensors(value, fn) for key, value in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map_tensors(value, fn) for value in tree)
    return tree


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, Mapping):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    if isinstance(tree, (tuple, list)):
        return [leaf for value in tree for leaf in _leaves(value)]
    return [tree]
