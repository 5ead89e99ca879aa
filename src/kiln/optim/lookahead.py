"""`Lookahead`: slow weights that follow any optimizer's fast weights (Zhang et al., 2019).

What lives here: the `Lookahead` wrapper, its state (the slow weights and the step counter) and
its checkpoint format. What does not: the inner optimizers themselves (torch's), and resolving
names such as `"ranger"` (RAdam inside Lookahead), which `names.py` does.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from kiln.options import whole_number


class Lookahead(Optimizer):
    """Wrap an optimizer: every `k` of its steps, pull the weights back towards slow weights.

    The inner optimizer moves the (fast) weights as usual. Lookahead keeps a second copy, the
    slow weights, taken when it first steps. After every `k`-th step the slow weights move a
    fraction `alpha` of the way to the fast weights, and the fast weights restart from them::

        slow += alpha * (fast - slow);  fast = slow

    The inner optimizer's state (momenta) is left as it is. The update runs on each device with
    foreach kernels and never waits for the device (the step count is a Python integer).

    `param_groups`, `state` and `defaults` are the inner optimizer's own, not copies: a learning
    rate scheduler built on the `Lookahead` changes the inner optimizer's learning rate, and the
    trainer logs it. `state_dict()` is the inner optimizer's (`"state"` and `"param_groups"`)
    with a `"lookahead"` entry added: `k`, `alpha`, the step count and the slow weights, so that
    a resumed run continues exactly. A plain optimizer state dict loads too (the slow weights
    then start afresh at the next step).

    Memory: one more copy of the optimized parameters, on their devices.

    Args:
        optimizer: The inner optimizer, built over the parameters (any `torch.optim.Optimizer`).
        k: Inner steps between two synchronisations (a positive integer).
        alpha: How far the slow weights move towards the fast ones, in (0, 1]; 1 makes
            Lookahead a no-op.

    Raises:
        TypeError: If `optimizer` is not a `torch.optim.Optimizer`.
        ValueError: If `k` or `alpha` is out of range.

    Example:
        >>> import torch, kiln
        >>> net = torch.nn.Linear(2, 1)
        >>> optimizer = Lookahead(torch.optim.SGD(net.parameters(), lr=0.1), k=2, alpha=0.5)
        >>> scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        >>> trainer = kiln.Trainer(net, loss="mse", optimizer=optimizer, device="cpu",
        ...                        progress=False)
        >>> history = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), epochs=1, batch_size=2)
        >>> optimizer.steps, history.lr
        (4, [0.1])
        >>> scheduler.step(); optimizer.optimizer.param_groups[0]["lr"]
        0.05

    The name `"ranger"` builds RAdam inside a Lookahead (k=5, alpha=0.5):
    `kiln.Trainer(net, optimizer="ranger", lr=1e-3)`.
    """

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                "Lookahead wraps a torch.optim.Optimizer, such as "
                f"Lookahead(torch.optim.RAdam(net.parameters())); received "
                f"{type(optimizer).__name__}."
            )
        if whole_number(k) is None or k < 1:
            raise ValueError(
                f"Lookahead: `k` (inner steps between synchronisations) must be a positive "
                f"integer; received {k!r}."
            )
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
            raise ValueError(
                f"Lookahead: `alpha` (how far the slow weights move) must be a number in (0, 1]; "
                f"received {alpha!r}."
            )
        # Optimizer.__init__ is not called: it would build parameter groups of our own, while
        # these must stay the inner optimizer's. What it sets up besides (hooks) is done here.
        self.optimizer = optimizer
        self.k = int(k)
        self.alpha = float(alpha)
        self.steps = 0
        self._slow: list[list[Tensor]] = []  # per parameter group, in the groups' order
        for hooks in (
            "_optimizer_step_pre_hooks",
            "_optimizer_step_post_hooks",
            "_optimizer_state_dict_pre_hooks",
            "_optimizer_state_dict_post_hooks",
            "_optimizer_load_state_dict_pre_hooks",
            "_optimizer_load_state_dict_post_hooks",
        ):
            setattr(self, hooks, OrderedDict())
        self._patch_step_function()

    # The inner optimizer's own objects, looked up each time: its `load_state_dict` replaces them.
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's parameter groups (learning rates live here)."""
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = groups

    @property
    def state(self) -> defaultdict[Tensor, Any]:
        """The inner optimizer's per-parameter state (momenta and the like)."""
        return self.optimizer.state

    @state.setter
    def state(self, state: defaultdict[Tensor, Any]) -> None:
        self.optimizer.state = state

    @property
    def defaults(self) -> dict[str, Any]:
        """The inner optimizer's default hyperparameters."""
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, defaults: dict[str, Any]) -> None:
        self.optimizer.defaults = defaults

    def __getstate__(self) -> dict[str, Any]:  # copy and pickle everything, not only the groups
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        inner = type(self.optimizer).__name__
        return f"Lookahead({inner}, k={self.k}, alpha={self.alpha})"

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients, as the inner optimizer does."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer; its slow weights start at the next step."""
        self.optimizer.add_param_group(param_group)

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        """Run the inner optimizer's step, and every `k`-th step move and reload the slow weights.

        Args:
            closure: Passed to the inner optimizer (re-evaluates the model, returns the loss).

        Returns:
            What the inner optimizer's step returns (the closure's loss, or None).
        """
        self._start_slow_weights()  # before the inner step: the slow weights start at θ₀
        loss = self.optimizer.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            self._synchronise()
        return loss

    @torch.no_grad()
    def _start_slow_weights(self) -> None:
        groups = self.optimizer.param_groups
        while len(self._slow) < len(groups):  # the first step, or a group added since
            params = groups[len(self._slow)]["params"]
            self._slow.append([p.detach().clone() for p in params])

    @torch.no_grad()
    def _synchronise(self) -> None:
        for group, slow in zip(self.optimizer.param_groups, self._slow, strict=True):
            fast = [p.detach() for p in group["params"]]
            # slow += alpha * (fast - slow), then the fast weights restart from the slow ones.
            torch._foreach_lerp_(slow, fast, self.alpha)
            torch._foreach_copy_(fast, slow)

    def state_dict(self) -> dict[str, Any]:
        """Return the inner optimizer's state dict with a `"lookahead"` entry added.

        The entry holds `k`, `alpha`, the step count and the slow weights (a list, parameter by
        parameter in the groups' order; empty before the first step): tensors and plain data.
        """
        state = dict(self.optimizer.state_dict())
        state["lookahead"] = {
            "k": self.k,
            "alpha": self.alpha,
            "steps": self.steps,
            "slow": [tensor for slow in self._slow for tensor in slow],
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state dict from `state_dict`, or a plain one of the inner optimizer.

        Raises:
            ValueError: If the saved slow weights do not match the parameters in number or shape.
        """
        inner = {key: value for key, value in state_dict.items() if key != "lookahead"}
        self.optimizer.load_state_dict(inner)
        saved = state_dict.get("lookahead")
        if saved is None:  # a plain optimizer's state: the slow weights start afresh
            self.steps, self._slow = 0, []
            return
        groups = [group["params"] for group in self.optimizer.param_groups]
        flat = list(saved["slow"])
        count = sum(len(params) for params in groups)
        if flat and len(flat) != count:
            raise ValueError(
                f"The Lookahead state holds {len(flat)} slow weights, but the optimizer has "
                f"{count} parameters. Load a state saved with the same parameters and groups."
            )
        self.k, self.alpha, self.steps = int(saved["k"]), float(saved["alpha"]), int(saved["steps"])
        remaining = iter(flat)
        self._slow = []
        for params in groups if flat else []:
            slow = []
            for param, tensor in zip(params, remaining, strict=False):
                if tensor.shape != param.shape:
                    raise ValueError(
                        f"A saved Lookahead slow weight has the shape {tuple(tensor.shape)}, but "
                        f"its parameter has {tuple(param.shape)}. Load a state saved with the "
                        "same model."
                    )
                slow.append(tensor.detach().to(param.device, param.dtype, copy=True))
            self._slow.append(slow)
