"""Moving an optimizer to another model of the same architecture, with its state.

`trainer.model = copy.deepcopy(best)` (rolling back to the best weights found) must keep
training: the optimizer has to step the new model's parameters, with the moments and counters
it had for the old ones. `rebind` does that through the optimizer's own `state_dict`, so every
torch optimizer (and `Lookahead`) is moved the same way.
"""

from __future__ import annotations

from torch import nn
from torch.optim import Optimizer


def rebind(optimizer: Optimizer, old: nn.Module, new: nn.Module) -> None:
    """Make `optimizer` step `new`'s parameters where it stepped `old`'s, keeping its state.

    Parameters are matched by name (`named_parameters`), so the groups keep their settings.

    Raises:
        ValueError: If `new` has other parameter names or shapes than `old`, or the optimizer
            holds parameters that are not `old`'s.

    Example:
        >>> import copy, torch
        >>> net = torch.nn.Linear(2, 1)
        >>> optimizer = torch.optim.Adam(net.parameters())
        >>> net(torch.ones(1, 2)).sum().backward(); optimizer.step()
        >>> best = copy.deepcopy(net)
        >>> rebind(optimizer, net, best)
        >>> optimizer.param_groups[0]["params"][0] is best.weight
        True
    """
    old_names = {id(param): name for name, param in old.named_parameters()}
    new_params = dict(new.named_parameters())
    shapes = {name: tuple(param.shape) for name, param in old.named_parameters()}
    differ = {name: tuple(p.shape) for name, p in new_params.items()} != shapes
    if differ:
        raise ValueError(
            f"The new model ({type(new).__name__}) has other parameters than the trainer's "
            f"({type(old).__name__}): assign a model of the same architecture (a copy of it, "
            "with other weights), or build a new Trainer for another one."
        )
    if any(
        id(param) not in old_names for group in optimizer.param_groups for param in group["params"]
    ):
        raise ValueError(
            "The optimizer steps parameters that are not the model's (a loss's, say), so it "
            "cannot follow a new model: build a new Trainer for it."
        )
    saved = optimizer.state_dict()
    for group in optimizer.param_groups:
        group["params"] = [new_params[old_names[id(param)]] for param in group["params"]]
    optimizer.load_state_dict(saved)  # the state, keyed anew by the new parameters
