"""How `kiln fit` trains a `TableNet`: optimizer, schedules, length, and the weights it keeps.

What lives here: the training recipe of the table command, as measured on kiln's development
tables (docs/benchmarks.md), after the "Better by default" MLP (RealMLP, Holzmüller et al.,
NeurIPS 2024): Adam with a short memory of squared gradients (`betas=(0.9, 0.95)`), a learning
rate per kind of parameter (`LR_FACTORS`), decoupled weight decay on the weights only, a
learning rate that rises and falls four times in cycles that lengthen (`coslog4`), dropout and
weight decay that hold for half the run and then fade (`flat_cos`), labels smoothed by 0.1, a
length set by the table's size (`passes`), and the best weights of each cycle kept and
averaged where that lowers the validation loss (`BestEpoch`).
What does not: the network (`model.py`), the columns (`spec.py`), the run directory
(`train.py`).

Example:
    >>> [round(coslog4(t), 3) for t in (0.0, (2**0.5 - 1) / 15, 1 / 15, 1.0)]
    [0.0, 1.0, 0.0, 0.0]
    >>> [flat_cos(t) for t in (0.0, 0.5, 1.0)]
    [1.0, 1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kiln.callbacks.base import Callback
from kiln.tables.embeddings import PeriodicEmbedding, PiecewiseLinearEmbedding
from kiln.tables.model import FrontScale, MemberLinear, NTKLinear, ScaledActivation, TableNet
from kiln.tables.spec import TableSpec

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: The learning rate of each kind of parameter, as a factor of the base rate.
LR_FACTORS = {"weight": 1.0, "bias": 0.1, "scale": 6.0, "periodic": 0.1, "alpha": 0.1}
#: The weight decay of each kind of parameter, as a factor of `WEIGHT_DECAY` (decoupled: it is
#: also multiplied by the parameter's learning rate, as in `torch.optim.AdamW`).
WD_FACTORS = {"weight": 1.0, "bias": 0.0, "scale": 6.0, "periodic": 0.1, "alpha": 0.1}
#: Decoupled weight decay of the weights (the other parameters have none).
WEIGHT_DECAY = 0.02
#: Label smoothing of classification targets.
SMOOTHING = 0.1
#: The temperatures `calibrate` may choose: log T within +- this (T from 1/2 to 2).
TEMPERATURE_RANGE = math.log(2.0)
#: Adam's betas: a short memory of squared gradients suits the short runs.
BETAS = (0.9, 0.95)
#: Whether this torch has AdamW's fused kernel for the CPU and CUDA (from 2.4).
_FUSED_KERNEL = hasattr(torch, "_fused_adamw_") and tuple(
    int(part) for part in torch.__version__.split(".")[:2]
) >= (2, 4)


def coslog4(t: float) -> float:
    """The learning-rate factor at fraction `t` of the run: `(1 - cos(2 pi log2(1 + 15 t))) / 2`.

    Four cycles from 0 up to 1 and back, each twice as long as the one before (they end at
    t = 1/15, 3/15, 7/15 and 1), so there is no length to tune: every cycle ends in a low rate.
    """
    return (1 - math.cos(2 * math.pi * math.log2(1 + 15 * min(max(t, 0.0), 1.0)))) / 2


def coslog4_cycle(t: float) -> int:
    """Which of `coslog4`'s four cycles (0 to 3) fraction `t` of the run belongs to.

    A cycle's last instant, where its rate is back at 0, belongs to it.

    Example:
        >>> [coslog4_cycle(t) for t in (0.0, 1 / 15, 0.1, 3 / 15, 0.5, 1.0)]
        [0, 0, 1, 1, 3, 3]
    """
    position = math.log2(1 + 15 * min(max(t, 0.0), 1.0))
    return max(0, min(3, math.ceil(position - 1e-9) - 1))


def flat_cos(t: float) -> float:
    """1 for the first half of the run, then a half cosine down to 0 at the end."""
    t = min(max(t, 0.0), 1.0)
    return 1.0 if t <= 0.5 else (1 + math.cos(math.pi * (2 * t - 1))) / 2


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Split `model`'s parameters into the optimizer groups of `LR_FACTORS`.

    Each group carries its `lr_factor` and `wd_factor`, which `TableSchedule` reads.

    Example:
        >>> from kiln.tables.model import TableNet
        >>> groups = parameter_groups(TableNet(numeric=2, dense=2, hidden=[4]))
        >>> [(g["name"], len(g["params"])) for g in groups]
        [('weight', 2), ('bias', 2), ('scale', 1), ('periodic', 4), ('alpha', 1)]
    """
    kinds: dict[str, list[nn.Parameter]] = {name: [] for name in LR_FACTORS}
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, (NTKLinear, MemberLinear, PiecewiseLinearEmbedding)):
            kinds["weight"].append(module.weight)
            kinds["bias"].append(module.bias)
        elif isinstance(module, nn.Embedding):
            kinds["weight"] += own
        elif isinstance(module, FrontScale):
            kinds["scale"] += own
        elif isinstance(module, PeriodicEmbedding):
            kinds["periodic"] += own
        elif isinstance(module, ScaledActivation):
            kinds["alpha"] += own
        elif own:
            kinds["weight" if module is not model else "bias"] += own
    return [
        {"name": name, "params": params, "lr_factor": LR_FACTORS[name],
         "wd_factor": WD_FACTORS[name]}
        for name, params in kinds.items()
        if params
    ]  # fmt: skip


def _unwrapped(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` without torch's lazy `torch._dynamo` guard, where torch wraps it."""
    return getattr(method, "__wrapped__", method)


class TableAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay) that does not import `torch._dynamo`: 1.3 s a process.

    Written here because speed demands it: every `torch.optim` optimizer imports
    `torch._dynamo` the first time it adds a parameter group, zeroes gradients, steps or saves
    its state (torch wraps those methods to keep the compiler out of them), and on the 2-core
    development machine that import takes 1.3 s, as long as importing torch itself: a sixth
    of a `kiln fit` process. This class keeps `torch.optim.Optimizer`'s own bookkeeping
    (parameter groups, `state_dict`, `load_state_dict`, `zero_grad`) without those wrappers,
    and computes AdamW's update with torch's fused kernel, as `torch.optim.AdamW(fused=True)`
    does (one pass over each tensor: a third of the multi-tensor form's time on the CPU), or
    where torch has no such kernel with multi-tensor (`_foreach`) operations, as
    `torch.optim.AdamW(foreach=True)` does: either way torch's AdamW update up to the last
    bits (tested).

    Args:
        params: Parameters or parameter groups (dicts with "params" and any of the options).
        lr: The learning rate.
        betas: The decay rates of the gradient's running mean and of its square's.
        eps: Added to the root of the squares' mean.
        weight_decay: Decoupled weight decay: each step multiplies weights by `1 - lr * wd`.

    Example:
        >>> layer = nn.Linear(3, 1)
        >>> optimizer = TableAdamW(layer.parameters(), lr=0.1, betas=(0.9, 0.95))
        >>> layer(torch.ones(2, 3)).sum().backward()
        >>> optimizer.step()
        >>> int(optimizer.state[layer.bias]["step"])
        1
    """

    add_param_group = _unwrapped(torch.optim.Optimizer.add_param_group)
    zero_grad = _unwrapped(torch.optim.Optimizer.zero_grad)
    state_dict = _unwrapped(torch.optim.Optimizer.state_dict)
    load_state_dict = _unwrapped(torch.optim.Optimizer.load_state_dict)

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:  # type: ignore[override]
        """Update every parameter that has a gradient (no closure: the recipe needs none)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self.state[p] for p in params]
            for p, state in zip(params, states, strict=True):
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif state["step"].device != p.device:
                    # a loaded state keeps its counts on the CPU; the fused kernel needs them
                    # beside the parameters on a GPU
                    state["step"] = state["step"].to(p.device, torch.float32)
            grads = [p.grad for p in params]
            means = [state["exp_avg"] for state in states]
            squares = [state["exp_avg_sq"] for state in states]
            steps = [state["step"] for state in states]
            torch._foreach_add_(steps, 1.0)
            if not _fused_adamw(group, params, grads, means, squares, steps):
                _foreach_adamw(group, params, grads, means, squares, float(steps[0]))


def _fused_adamw(
    group: dict[str, Any],
    params: list[Tensor],
    grads: list[Tensor],
    means: list[Tensor],
    squares: list[Tensor],
    steps: list[Tensor],
) -> bool:
    """AdamW in one kernel per tensor (`torch._fused_adamw_`); False where torch has none.

    Three times faster than the multi-tensor form on the CPU (it reads each tensor once), and
    it needs no `torch._dynamo`: torch's own `AdamW(fused=True)` imports it before calling
    the same kernel. The kernel runs on the CPU and CUDA from torch 2.4; elsewhere the
    update takes `_foreach_adamw`.
    """
    if not _FUSED_KERNEL or params[0].device.type not in ("cpu", "cuda"):
        return False
    beta1, beta2 = group["betas"]
    torch._fused_adamw_(
        params, grads, means, squares, [], steps, lr=group["lr"], beta1=beta1, beta2=beta2,
        weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False, maximize=False,
    )  # fmt: skip
    return True


def _foreach_adamw(
    group: dict[str, Any],
    params: list[Tensor],
    grads: list[Tensor],
    means: list[Tensor],
    squares: list[Tensor],
    count: float,
) -> None:
    """AdamW with multi-tensor operations, as `torch.optim.AdamW(foreach=True)` computes it."""
    lr, (beta1, beta2) = group["lr"], group["betas"]
    if group["weight_decay"]:
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
    torch._foreach_lerp_(means, grads, 1 - beta1)
    torch._foreach_mul_(squares, beta2)
    torch._foreach_addcmul_(squares, grads, grads, 1 - beta2)
    denominators = torch._foreach_sqrt(squares)
    torch._foreach_div_(denominators, math.sqrt(1 - beta2**count))
    torch._foreach_add_(denominators, group["eps"])
    torch._foreach_addcdiv_(params, means, denominators, -lr / (1 - beta1**count))


def default_lr(spec: TableSpec) -> float:
    """The base learning rate for `spec`'s targets: 0.2 for regression only, else 0.04.

    RealMLP-TD's two rates (for the neural-tangent parametrisation of `NTKLinear`).
    """
    return 0.2 if all(c["kind"] == "regression" for c in spec.targets) else 0.04


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Return the recipe's AdamW over `parameter_groups(model)`, at the base rate `lr`."""
    groups = parameter_groups(model)
    for group in groups:
        group["lr"] = lr * group["lr_factor"]
        group["weight_decay"] = WEIGHT_DECAY * group["wd_factor"]
    return TableAdamW(groups, lr=lr, betas=BETAS)


class TableSchedule(Callback):
    """Set the learning rate, weight decay and dropout of the recipe before every step.

    At fraction `t = step / steps` of the run: each optimizer group's rate is
    `lr * lr_factor * coslog4(t)`, its weight decay `WEIGHT_DECAY * wd_factor * flat_cos(t)`,
    and every `nn.Dropout`'s rate `drop * flat_cos(t)`. Everything follows from the trainer's
    step count, so a resumed run continues the same curves.

    Args:
        lr: The base learning rate.
        drop: The dropout rate of the first half of the run.
        steps: The optimizer steps of the whole run.

    Example:
        >>> schedule = TableSchedule(lr=0.04, drop=0.15, steps=100)
        >>> schedule.steps
        100
    """

    def __init__(self, lr: float, drop: float, steps: int) -> None:
        self.lr, self.drop, self.steps = lr, drop, max(1, steps)
        self._dropouts: list[nn.Dropout] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        """Find the model's dropout layers once, rather than at every step."""
        self._dropouts = [m for m in trainer.model.modules() if isinstance(m, nn.Dropout)]

    def on_train_batch_start(self, trainer: Trainer) -> None:
        """Apply the curves at the current step."""
        t = trainer.state.step / self.steps
        rate, fade = coslog4(t), flat_cos(t)
        groups = trainer.optimizer.param_groups if trainer.optimizer is not None else []
        for group in groups:
            group["lr"] = self.lr * group.get("lr_factor", 1.0) * rate
            group["weight_decay"] = WEIGHT_DECAY * group.get("wd_factor", 0.0) * fade
        for dropout in self._dropouts:
            dropout.p = self.drop * fade


#: The optimizer steps a run aims at (within its bounds on epochs, `passes`).
STEPS = 640
#: The most times a run validates, logs and saves: its epochs are grouped into this many rounds.
ROUNDS = 16


class BestEpoch(Callback):
    """Keep the best weights of each learning-rate cycle, and at the end mix those that help.

    A round of the trainer holds several epochs (`rounds`), and the learning rate cycles
    within it: the best weights are often those of one epoch, at the bottom of a cycle, that a
    check once a round would miss (on the development tables, checking once a round lost up to
    0.09 of R2). So after each epoch (pass over the training rows) this callback computes the
    unsmoothed loss on the validation rows itself, in one batch, and copies the weights to the
    CPU when they are the best so far of their `coslog4` cycle.

    At the end, `restore` starts from the best epoch of the run and averages in, one by one
    in order of their loss, the best weights of the other cycles, keeping each only if the
    average's validation loss is lower (a "greedy soup" of snapshots: Wortsman et al., 2022;
    averaging the ends of learning-rate cycles: Izmailov et al., 2018). The cycles start from
    the same weights and are near enough that their average is a better network more often
    than not (on the development tables: 7 table-splits of 21 gained accuracy, 2 lost). Its
    state goes into the checkpoint, so a resumed run keeps the same candidates.

    Args:
        inputs: The validation rows, encoded (moved to the trainer's device when `fit` starts).
        targets: Their targets.
        criterion: The `MixedCriterion` (called with `unscaled=True`).
        steps_per_epoch: Optimizer steps in one epoch.
        steps: Optimizer steps in the whole run (where the cycles are: `coslog4_cycle`).

    Attributes:
        loss: The lowest validation loss of an epoch so far (None before the first epoch).
        epoch: Its epoch (1-based).
        cycles: Per cycle, `(loss, weights)` of its best epoch, weights on the CPU.
        mixed: The cycles whose weights `restore` averaged, best first.

    Example:
        >>> best = BestEpoch(torch.zeros(4, 1), torch.zeros(4, 1), None, 2, steps=100)
        >>> best.loss is None, best.cycles
        (True, {})
    """

    def __init__(
        self, inputs: Tensor, targets: Tensor, criterion: Any, steps_per_epoch: int, steps: int
    ):
        self.inputs, self.targets, self.criterion = inputs, targets, criterion
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.steps = max(1, steps)
        self.loss: float | None = None
        self.epoch: int | None = None
        self.cycles: dict[int, tuple[float, dict[str, Tensor]]] = {}
        self.mixed: list[int] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        """Move the validation rows to the trainer's device, once."""
        self.inputs = self.inputs.to(trainer.device)
        self.targets = self.targets.to(trainer.device)

    def on_train_batch_end(self, trainer: Trainer) -> None:
        """At the end of an epoch, measure the validation loss; keep the weights if best."""
        step = trainer.state.step
        if step == 0 or step % self.steps_per_epoch:
            return
        loss = self.validation_loss(trainer.model)
        if self.loss is None or loss < self.loss:
            self.loss, self.epoch = loss, step // self.steps_per_epoch
        cycle = coslog4_cycle(step / self.steps)
        if cycle not in self.cycles or loss < self.cycles[cycle][0]:
            state = trainer.model.state_dict()
            self.cycles[cycle] = (
                loss,
                {k: v.detach().to("cpu", copy=True) for k, v in state.items()},
            )

    def validation_loss(self, model: nn.Module) -> float:
        """The unsmoothed loss of `model` on the validation rows (in evaluation mode)."""
        was_training = model.training
        model.eval()
        with torch.no_grad():
            loss = float(self.criterion(model(self.inputs), self.targets, unscaled=True))
        model.train(was_training)
        return loss

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights, averaged with the other cycles' bests that help.

        The candidates are spent: they are dropped (`cycles` is emptied), so that a model saved
        afterwards carries its weights once, not five times. Nothing changes if no epoch was
        checked.
        """
        if not self.cycles:
            return
        order = sorted(self.cycles, key=lambda cycle: self.cycles[cycle][0])
        mixed, lowest = order[:1], self.cycles[order[0]][0]
        for cycle in order[1:]:
            model.load_state_dict(self._average([*mixed, cycle]))
            loss = self.validation_loss(model)
            if loss < lowest:
                mixed, lowest = [*mixed, cycle], loss
        model.load_state_dict(self._average(mixed))
        self.mixed, self.cycles = mixed, {}

    def _average(self, cycles: list[int]) -> dict[str, Tensor]:
        """The mean of the cycles' weights (integer buffers, such as counts, from the first)."""
        states = [self.cycles[cycle][1] for cycle in cycles]
        return {
            key: torch.stack([state[key] for state in states]).mean(0)
            if first.is_floating_point()
            else first
            for key, first in states[0].items()
        }

    def state_dict(self) -> dict[str, Any]:
        """Return the best loss, its epoch, and each cycle's best loss and weights."""
        return {"loss": self.loss, "epoch": self.epoch, "cycles": self.cycles}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (or an earlier kiln's single best epoch)."""
        self.loss, self.epoch = state["loss"], state["epoch"]
        if "cycles" in state:
            self.cycles = state["cycles"]
        elif state.get("weights") is not None:  # kiln 0.x before the cycles: one candidate
            self.cycles = {-1: (state["loss"], state["weights"])}


def rounds(epochs: int) -> tuple[int, int]:
    """Return `(rounds, epochs per round)` for a run of at least `epochs` epochs.

    A round is one epoch of the trainer made of several passes over the rows (`kiln.repeat`):
    validation, the log's row, the best weights and the checkpoint come once a round, so that
    a run of hundreds of short epochs does not spend its time writing files. The run makes
    `rounds * per_round` epochs: `epochs` rounded up to a whole round.

    Example:
        >>> rounds(256), rounds(45), rounds(4)
        ((16, 16), (15, 3), (4, 1))
    """
    per_round = math.ceil(epochs / ROUNDS)
    return math.ceil(epochs / per_round), per_round


def passes(rows: int, batch_size: int) -> int:
    """Return how many epochs (passes over `rows` training rows) the recipe makes.

    About `STEPS` optimizer steps, within 16 to 256 epochs (RealMLP's fixed count): small
    tables get many short epochs, large ones few long ones, so that a table of a thousand rows
    trains in a couple of seconds.

    Example:
        >>> passes(100, 256), passes(1_000, 256), passes(20_000, 256), passes(100_000, 256)
        (256, 160, 16, 16)
    """
    per_pass = math.ceil(rows / batch_size)
    return int(min(256, max(16, math.ceil(STEPS / per_pass))))


def calibrate(
    model: nn.Module, layout: list[tuple[str, int]], inputs: Tensor, targets: Tensor
) -> list[float]:
    """Fit a temperature to each classification target on held-out rows; fold it into `model`.

    Smoothed labels teach the network to hedge: its probabilities are too cautious, which costs
    log loss though not accuracy. For each binary or multiclass target, the temperature T that
    minimises the unsmoothed loss of `logits / T` on `inputs` (the validation rows) is found by
    a golden-section search within a factor of 2 either way (a validation set without errors
    would otherwise push T to 0: certainty that one error on new rows makes very costly), and
    the output layer's rows for that target
    are divided by it, so the network itself gives the calibrated logits: the saved model needs
    nothing beside it. The predicted classes do not change.

    Args:
        model: A `TableNet`, trained; its last layer is changed in place.
        layout: `(kind, outputs)` per target, as `TableSpec.output_layout`.
        inputs: Held-out rows, encoded.
        targets: Their encoded targets, `(rows, targets)`, NaN where missing.

    Returns:
        The temperature of each target (1.0 for regression targets and where no row has one).

    Example:
        >>> from kiln.tables.model import TableNet
        >>> net = TableNet(numeric=1, dense=1, hidden=[4], output=1)
        >>> x = torch.linspace(-1, 1, 50).unsqueeze(1)
        >>> y = (x > 0).float()
        >>> [t > 0 for t in calibrate(net, [("binary", 1)], x, y)]
        [True]
    """
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(inputs).double()
    model.train(was_training)
    last = model.layers[-1] if isinstance(model, TableNet) else None
    last = last if isinstance(last, (NTKLinear, MemberLinear)) else None
    temperatures, start = [], 0
    for column, (kind, width) in enumerate(layout):
        block, start = slice(start, start + width), start + width
        present = ~torch.isnan(targets[:, column])
        if kind == "regression" or not bool(present.any()) or last is None:
            temperatures.append(1.0)
            continue
        temperature = _temperature(logits[present, block], targets[present, column].double())
        last.divide_outputs(block, temperature)
        temperatures.append(temperature)
    return temperatures


def _temperature(logits: Tensor, labels: Tensor) -> float:
    """The temperature that minimises the log loss of `logits / T` (one column: binary)."""

    def loss(log_t: float) -> float:
        scaled = logits / math.exp(log_t)
        if logits.shape[1] == 1:
            return float(nn.functional.binary_cross_entropy_with_logits(scaled[:, 0], labels))
        return float(nn.functional.cross_entropy(scaled, labels.long()))

    return math.exp(_golden_minimum(loss, -TEMPERATURE_RANGE, TEMPERATURE_RANGE))


def _golden_minimum(f: Callable[[float], float], low: float, high: float, steps: int = 40) -> float:
    """The minimiser of a unimodal `f` on [low, high], by golden-section search."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2
