"""FSDP2 for kiln: shard a model with `fully_shard`, and read or write its whole state.

A model too large for one device is split across the ranks: each rank keeps a slice of every
parameter, gradient and optimizer moment, and a layer's full weights exist only while it runs
(torch's FSDP2, `torch.distributed.fsdp.fully_shard`). `shard_model` decides the units, the
submodules that gather their weights together, and applies `fully_shard` to each then the root.

The trainer's `state_dict`, `trainer.save` and export need the whole model in the usual form.
`full_state` gathers it (through `torch.distributed.checkpoint.state_dict.get_state_dict`) into
ordinary CPU tensors on rank 0, with the optimizer's state numbered the way
`optimizer.state_dict()` numbers it for an unsharded model, so that a file saved from a sharded
run loads into a plain one and back. `load_full_state` does the reverse.

With gradient accumulation, `no_gradient_sync` keeps the gradients of a group's batches before
its last on each rank (FSDP2's `set_requires_gradient_sync(False)`): the group's last backward
reduce-scatters them all at once.

What lives here: sharding, gradient accumulation without reduction, and whole-state transfer.
What does not: sharded checkpoints of a run (`dcp.py`), starting ranks (`launch.py`), DDP and
the process group from torchrun's environment (the rest of `kiln.distributed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.optim import Optimizer

#: Containers whose own forward is not what runs (or that only group layers): `shard_model`
#: looks inside them for units instead of making the container one unit.
CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.Sequential)


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _check_module_classes(modules: Any) -> tuple[type[nn.Module], ...]:
    if isinstance(modules, type) or not isinstance(modules, Iterable):
        raise TypeError(
            "`modules` must be a list of module classes, each of which becomes its own FSDP "
            f"unit (such as [nn.TransformerEncoderLayer]); received {modules!r}."
        )
    classes = tuple(modules)
    wrong = [
        item for item in classes if not (isinstance(item, type) and issubclass(item, nn.Module))
    ]
    if wrong:
        raise TypeError(
            "`modules` must hold nn.Module subclasses (classes, not instances), such as "
            f"[nn.TransformerEncoderLayer]; received {wrong[0]!r}."
        )
    return classes


def shard_units(
    model: nn.Module, modules: Sequence[type[nn.Module]] | None = None
) -> list[nn.Module]:
    """Return the submodules `shard_model` makes FSDP units of, inner ones first (not the root).

    By default the units are the model's children that hold parameters, where a container
    (`nn.Sequential`, `nn.ModuleList`, `nn.ModuleDict`) is looked into rather than taken whole:
    the layers of an `nn.Sequential` or of a transformer's `ModuleList` each become a unit.
    With `modules`, every submodule that is an instance of one of these classes is a unit.

    Args:
        model: The network.
        modules: Module classes to make units of, such as `[nn.TransformerEncoderLayer]`.

    Raises:
        TypeError: If `modules` is not a list of `nn.Module` subclasses.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> [type(unit).__name__ for unit in shard_units(net)]
        ['Linear', 'Linear']
        >>> len(shard_units(net, modules=[nn.ReLU]))
        1
    """
    if modules is not None:
        classes = _check_module_classes(modules)
        # Post-order: an inner unit is sharded before the unit that holds it, as FSDP2 requires.
        found: list[nn.Module] = []

        def visit(module: nn.Module) -> None:
            for child in module.children():
                visit(child)
            if module is not model and isinstance(module, classes):
                found.append(module)

        visit(model)
        return found
    units: list[nn.Module] = []
    for child in model.children():
        if isinstance(child, CONTAINERS):
            units.extend(shard_units(child))
        elif _has_parameters(child):
            units.append(child)
    return units


def shard_model(
    model: nn.Module,
    mesh: Any = None,
    *,
    modules: Sequence[type[nn.Module]] | None = None,
    reshard_after_forward: bool = True,
    **options: Any,
) -> nn.Module:
    """Shard `model` across the ranks with FSDP2: `fully_shard` on each unit, then the root.

    Call it in every rank, after the process group exists (under `torchrun`, in a function
    started by `kiln.launch`) and before the optimizer is built, since sharding replaces the
    parameters. It works on the CPU with the gloo backend as on GPUs with NCCL.

    Args:
        model: The network, changed in place (its class becomes an FSDP subclass).
        mesh: A `DeviceMesh`; `None` for all ranks of the default process group.
        modules: Module classes to make units of (see `shard_units`); `None` for the default.
        reshard_after_forward: Free the gathered weights after each unit's forward (less
            memory, one more all-gather in backward); `False` keeps them until backward.
        **options: Passed to `fully_shard` (`mp_policy`, `offload_policy`).

    Returns:
        The same model, sharded.

    Raises:
        RuntimeError: If no process group is initialised.
        ValueError: If the model is sharded already.
        TypeError: If `modules` is not a list of `nn.Module` subclasses.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from kiln.distributed.launch import single_process_group
        >>> with single_process_group():
        ...     net = shard_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        ...     is_sharded(net), net(torch.randn(3, 4)).shape
        (True, torch.Size([3, 2]))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"shard_model expects an nn.Module; received {type(model).__name__}.")
    if is_sharded(model):
        raise ValueError(
            f"{type(model).__name__} is sharded already (fully_shard was applied to it). Build "
            "the model anew, or use it as it is."
        )
    units = shard_units(model, modules)  # checks `modules` before needing a process group
    if mesh is None and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "shard_model needs a process group, and none is initialised in this process. Run "
            "the script under `torchrun`, start the function with `kiln.launch(fn, nprocs=N)`, "
            "or call `torch.distributed.init_process_group` first."
        )
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward, **options)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward, **options)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Tell whether `fully_shard` has been applied to `model` itself.

    Example:
        >>> from torch import nn
        >>> is_sharded(nn.Linear(2, 2))
        False
    """
    return isinstance(model, FSDPModule)


@contextmanager
def no_gradient_sync(model: nn.Module) -> Iterator[None]:
    """Inside, backward keeps the gradients on this rank; the first backward after reduces them.

    Enclose the forward and backward of every batch of an accumulation group but the last.
    The unsharded gradients are held until then: memory that grows with the model, not the
    group.

    Args:
        model: The model sharded by `shard_model` (its root).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from kiln.distributed.launch import single_process_group
        >>> with single_process_group():
        ...     net = shard_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        ...     with no_gradient_sync(net):
        ...         net(torch.randn(3, 4)).sum().backward()
        ...     net(torch.randn(3, 4)).sum().backward()  # reduces both batches' gradients
        ...     net[0].weight.grad is not None
        True
    """
    sharded: Any = model  # an FSDPModule: the class `fully_shard` gave it
    sharded.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        sharded.set_requires_gradient_sync(True)


def _parameter_names(model: nn.Module, optimizer: Optimizer) -> list[str]:
    """The optimizer's parameters' names, in the order `optimizer.state_dict()` numbers them."""
    names = {parameter: name for name, parameter in model.named_parameters(remove_duplicate=False)}
    ordered = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    unknown = [index for index, parameter in enumerate(ordered) if parameter not in names]
    if unknown:
        raise ValueError(
            f"The optimizer holds {len(unknown)} parameter(s) that are not the model's (the first "
            f"at position {unknown[0]}). Build the optimizer after sharding, from "
            "`model.parameters()`."
        )
    return [names[parameter] for parameter in ordered]


def _relabel(state: dict[str, Any], label: Any) -> dict[str, Any]:
    """The optimizer state with each parameter key `k` replaced by `label[k]`."""
    groups = [
        {**group, "params": [label[key] for key in group["params"]]}
        for group in state["param_groups"]
    ]
    return {
        "state": {label[key]: value for key, value in state["state"].items()},
        "param_groups": groups,
    }


def _numbered(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The optimizer state with parameter names replaced by numbers, as `state_dict()` has it."""
    return _relabel(state, {name: index for index, name in enumerate(names)})


def _named(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The reverse of `_numbered`: numbers back to names."""
    return _relabel(state, names)


def full_state(
    model: nn.Module, optimizer: Optimizer | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Gather the whole model and optimizer state, as CPU tensors, on rank 0.

    Every rank must call it (it communicates). Rank 0 receives what `model.state_dict()` and
    `optimizer.state_dict()` give for the same model unsharded; the other ranks receive empty
    dicts. On a model that is not sharded it returns those two state dicts, on the CPU.

    Args:
        model: The network, sharded by `shard_model` or not.
        optimizer: Its optimizer, or `None`.

    Returns:
        `(model_state, optimizer_state)`; `optimizer_state` is `None` without an optimizer.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1)
        >>> weights, moments = full_state(net, torch.optim.Adam(net.parameters()))
        >>> sorted(weights), sorted(moments)
        (['bias', 'weight'], ['param_groups', 'state'])
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    if optimizer is None:
        return weights, None
    names = _parameter_names(model, optimizer)  # before torch meets a parameter it cannot name
    moments = get_optimizer_state_dict(model, optimizer, options=options)
    if not moments:  # the other ranks of a sharded model receive nothing
        return weights, {}
    return weights, _numbered(moments, names)


def load_full_state(
    model: nn.Module,
    optimizer: Optimizer | None,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
    *,
    from_rank0: bool = False,
) -> None:
    """Load whole (unsharded) state, as `full_state` returns it, into a sharded or a plain model.

    Every rank must call it. Each rank keeps only its own slice of what it loads.

    Args:
        model: The network, sharded by `shard_model` or not.
        optimizer: Its optimizer, or `None` to load the weights only.
        model_state: What `model.state_dict()` gave for the model unsharded.
        optimizer_state: What `optimizer.state_dict()` gave, or `None`.
        from_rank0: Only rank 0 holds the state (the others pass empty dicts); it is broadcast.

    Example:
        >>> import torch
        >>> source, target = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
        >>> load_full_state(target, None, source.state_dict())
        >>> torch.equal(target.weight, source.weight)
        True
    """
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=from_rank0)
    set_model_state_dict(model, model_state, options=options)
    if optimizer is None or optimizer_state is None:
        return
    if from_rank0 and not optimizer_state:
        named: dict[str, Any] = {}
    else:
        named = _named(optimizer_state, _parameter_names(model, optimizer))
    set_optimizer_state_dict(model, optimizer, named, options=options)
