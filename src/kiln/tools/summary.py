"""`summary`: a table of a model's layers with their shapes, parameters and multiply-adds.

The model runs once, without gradients and in eval mode, on a made-up batch of the given input
size; hooks on its modules record what each layer received and returned. The size excludes the
batch dimension, as in `summary(model, (1, 28, 28))`, and the table ends with the totals and the
count of layers by type.

Multiply-adds are counted by `kiln.tools.mult_adds.count_mult_adds`, whose module docstring says for
which layers and how.

What lives here: the hooks, the counts and the table. What does not: `Trainer.summary`, which
calls `summary` with the trainer's model and device.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from kiln.options import whole_number
from kiln.tools.mult_adds import count_mult_adds, tensors_in

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerRow:
    """One call of one layer: its name, type, shapes, parameters and multiply-adds.

    `name` is the module's path in the model (`features.0`), empty for the model itself.
    `params` and `trainable` count the parameters the layer owns (a layer called twice shows
    them on both rows; the totals of `ModelSummary` count each parameter once). `mult_adds` is
    `None` for a layer whose multiply-adds are not counted. `is_layer` is `False` for a row
    that shows the parameters a container owns directly (its layers have rows of their own).

    Example:
        >>> LayerRow("fc", "Linear", ((1, 4),), ((1, 2),), 10, 10, mult_adds=8).mult_adds
        8
    """

    name: str
    kind: str
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    params: int
    trainable: int
    mult_adds: int | None
    is_layer: bool = True


@dataclass(frozen=True)
class ModelSummary:
    """What `summary` found: one row per layer call, and the model's totals.

    `str(summary)` is the table. Sizes are in bytes: the made-up input, the layers' outputs
    (kept for the backward pass, and as many gradients again: counted twice, as torchsummary
    does) and the parameters.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        >>> summary(net, (4,)).layer_counts
        {'Linear': 2, 'ReLU': 1}
    """

    model: str
    rows: tuple[LayerRow, ...]
    total_params: int
    trainable_params: int
    input_bytes: int
    activation_bytes: int
    param_bytes: int

    @property
    def non_trainable_params(self) -> int:
        """Parameters that do not require gradients (frozen)."""
        return self.total_params - self.trainable_params

    @property
    def mult_adds(self) -> int:
        """The multiply-adds of one forward pass over the batch, summed over the counted layers."""
        return sum(row.mult_adds or 0 for row in self.rows)

    @property
    def layer_counts(self) -> dict[str, int]:
        """How many distinct layers of each type ran, by type name, in order of first call."""
        seen = dict.fromkeys((row.name, row.kind) for row in self.rows if row.is_layer)
        return dict(Counter(kind for _, kind in seen))

    def __str__(self) -> str:
        header = ("Layer (type)", "Input shape", "Output shape", "Param #", "Mult-adds")
        cells = [
            (
                f"{row.name} ({row.kind})" if row.name else row.kind,
                _shapes_text(row.input_shapes),
                _shapes_text(row.output_shapes),
                f"{row.params:,}",
                "-" if row.mult_adds is None else f"{row.mult_adds:,}",
            )
            for row in self.rows
        ]
        widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

        def line(values: Sequence[str]) -> str:  # text columns to the left, numbers right
            pairs = enumerate(zip(values, widths, strict=True))
            return "  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in pairs).rstrip()

        rule = "=" * len(line(header))
        megabytes = [self.input_bytes, self.activation_bytes, self.param_bytes]
        counts = ", ".join(f"{kind}: {count}" for kind, count in self.layer_counts.items())
        return "\n".join(
            [
                f"Model summary: {self.model}",
                rule,
                line(header),
                rule,
                *(line(values) for values in cells),
                rule,
                f"Total params: {self.total_params:,}",
                f"Trainable params: {self.trainable_params:,}",
                f"Non-trainable params: {self.non_trainable_params:,}",
                f"Total mult-adds: {self.mult_adds:,}",
                f"Layers: {counts or 'none'}",
                f"Input size (MB): {megabytes[0] / 1e6:.2f}",
                f"Forward/backward pass size (MB): {megabytes[1] / 1e6:.2f}",
                f"Params size (MB): {megabytes[2] / 1e6:.2f}",
                f"Estimated total size (MB): {sum(megabytes) / 1e6:.2f}",
            ]
        )


def summary(
    model: nn.Module,
    input_size: Sequence[int] | Sequence[Sequence[int]],
    batch_size: int = 1,
    device: str | torch.device | None = None,
    dtypes: torch.dtype | Sequence[torch.dtype] | None = None,
) -> ModelSummary:
    """Run `model` once on a made-up batch and describe each layer it called.

    The input is `batch_size` samples of `input_size`: random normal values for floating
    dtypes, zeros for integer ones (valid indices for an `Embedding`), made with a generator
    of its own, so the global random state is left as it was. The model runs in eval mode
    under `torch.no_grad()`; afterwards every module's train/eval mode is restored and every
    hook removed, also when the forward pass raises. See the module docstring for what the
    multiply-adds count.

    Args:
        model: The network.
        input_size: The size of one sample, without the batch dimension, such as `(1, 28, 28)`;
            for a model with several inputs, a list of sizes (`model(*inputs)` is called).
        batch_size: The samples in the made-up batch.
        device: Where to run; `None`: the device of the model's first parameter (the CPU for a
            model without any).
        dtypes: The dtype of the input, or one per input; `None`: the default float dtype.

    Returns:
        A `ModelSummary`; `print` it to see the table.

    Raises:
        TypeError: If `input_size`, `batch_size` or `dtypes` is of the wrong type.
        ValueError: If a size is not positive, or `dtypes` does not match the inputs.

    Example:
        >>> import torch
        >>> from kiln.tools.summary import summary
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> table = summary(net, (1, 8, 8))
        >>> table.total_params, table.mult_adds, table.rows[1].output_shapes
        (650, 640, ((1, 10),))
        >>> print(str(table).splitlines()[4])
        0 (Flatten)   [1, 1, 8, 8]  [1, 64]             0          -
    """
    sizes = _check_sizes(input_size)
    if not _is_dimension(batch_size):
        raise TypeError(f"summary: `batch_size` must be an int; received {batch_size!r}.")
    if batch_size <= 0:
        raise ValueError(f"summary: `batch_size` must be positive; received {batch_size}.")
    batch_size = int(batch_size)
    kinds = _check_dtypes(dtypes, len(sizes))
    if device is None:
        first = next(iter([*model.parameters(), *model.buffers()]), None)
        device = torch.device("cpu") if first is None else first.device
    generator = torch.Generator().manual_seed(0)
    inputs = [
        (
            torch.randn((batch_size, *size), generator=generator).to(kind)
            if kind.is_floating_point or kind.is_complex
            else torch.zeros((batch_size, *size), dtype=kind)
        ).to(device)
        for size, kind in zip(sizes, kinds, strict=True)
    ]
    calls = _run_with_hooks(model, inputs)
    return _build(model, calls, inputs)


@dataclass
class _Call:
    module: nn.Module
    inputs: tuple[Shape, ...]
    outputs: tuple[Shape, ...] = ()
    output_bytes: int = 0
    mult_adds: int | None = None


def _run_with_hooks(model: nn.Module, inputs: list[Tensor]) -> list[_Call]:
    """Call `model(*inputs)` with hooks on every module; return its calls in starting order."""
    calls: list[_Call] = []
    open_calls: dict[int, list[_Call]] = {}  # by module id: a module may call itself

    def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        call = _Call(module, tuple(tuple(t.shape) for t in tensors_in((args, kwargs))))
        calls.append(call)  # in the order the calls start: a parent comes before its layers
        open_calls.setdefault(id(module), []).append(call)

    def after(module: nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        call = open_calls[id(module)].pop()
        tensors = list(tensors_in(output))
        call.outputs = tuple(tuple(t.shape) for t in tensors)
        call.output_bytes = sum(t.numel() * t.element_size() for t in tensors)
        call.mult_adds = count_mult_adds(module, args, kwargs, output)

    modes = {module: module.training for module in model.modules()}
    handles = []
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(module.register_forward_hook(after, with_kwargs=True))
        model.eval()
        device = inputs[0].device
        # A model that draws random numbers even in eval mode leaves the caller's state alone.
        with torch.random.fork_rng([device] if device.type == "cuda" else []), torch.no_grad():
            model(*inputs)
    except Exception as error:
        if hasattr(error, "add_note"):  # Python 3.11+
            shapes = _shapes_text(tuple(tuple(t.shape) for t in inputs))
            error.add_note(f"(raised while summary ran {type(model).__name__} on {shapes})")
        raise
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return calls


def _build(model: nn.Module, calls: list[_Call], inputs: list[Tensor]) -> ModelSummary:
    names = {module: name for name, module in model.named_modules()}
    called = {call.module for call in calls}
    rows, activation_bytes = [], 0
    for call in calls:
        module = call.module
        # A layer is a module none of whose submodules ran (MultiheadAttention uses its
        # `out_proj` weights without calling it); a container with parameters of its own shows
        # those alone, its layers have rows of their own.
        leaf = not any(sub in called for sub in module.modules() if sub is not module)
        params = list(module.parameters(recurse=leaf))
        if not leaf and not params:
            continue
        activation_bytes += call.output_bytes if leaf else 0
        rows.append(
            LayerRow(
                name=names.get(module, ""),
                kind=type(module).__name__,
                input_shapes=call.inputs,
                output_shapes=call.outputs,
                params=sum(p.numel() for p in params),
                trainable=sum(p.numel() for p in params if p.requires_grad),
                mult_adds=call.mult_adds if leaf else None,
                is_layer=leaf,
            )
        )
    parameters = list(model.parameters())
    return ModelSummary(
        model=type(model).__name__,
        rows=tuple(rows),
        total_params=sum(p.numel() for p in parameters),
        trainable_params=sum(p.numel() for p in parameters if p.requires_grad),
        input_bytes=sum(t.numel() * t.element_size() for t in inputs),
        activation_bytes=2 * activation_bytes,
        param_bytes=sum(p.numel() * p.element_size() for p in parameters),
    )


def _shapes_text(shapes: tuple[Shape, ...]) -> str:
    return ", ".join(str(list(shape)) for shape in shapes) or "-"


def _check_sizes(input_size: Any) -> list[Shape]:
    """Return the input sizes as a list of shapes, one per input."""
    sequences = (torch.Size, tuple, list)
    one = isinstance(input_size, sequences) and all(_is_dimension(d) for d in input_size)
    sizes = [input_size] if one else list(input_size) if isinstance(input_size, sequences) else []
    if not sizes or not all(
        isinstance(size, sequences) and all(_is_dimension(d) for d in size) for size in sizes
    ):
        raise TypeError(
            "summary: `input_size` must be the size of one sample without the batch dimension, "
            "such as (1, 28, 28), or a list of such sizes for a model with several inputs; "
            f"received {input_size!r}."
        )
    shapes = [tuple(int(d) for d in size) for size in sizes]
    for shape in shapes:
        if any(d <= 0 for d in shape):
            raise ValueError(
                f"summary: every dimension of an input size must be positive; received {shape!r}"
                f" in {input_size!r}."
            )
    return shapes


def _is_dimension(value: Any) -> bool:
    return whole_number(value) is not None


def _check_dtypes(dtypes: Any, count: int) -> list[torch.dtype]:
    if dtypes is None:
        return [torch.get_default_dtype()] * count
    kinds = [dtypes] if isinstance(dtypes, torch.dtype) else dtypes
    if not isinstance(kinds, (tuple, list)) or not all(isinstance(k, torch.dtype) for k in kinds):
        raise TypeError(
            "summary: `dtypes` must be a torch dtype or a list of them, one per input, such as "
            f"torch.long; received {dtypes!r}."
        )
    if len(kinds) == 1:
        return list(kinds) * count
    if len(kinds) != count:
        raise ValueError(
            f"summary: `dtypes` has {len(kinds)} dtypes for {count} inputs; give one dtype for "
            "all inputs or one per input."
        )
    return list(kinds)
