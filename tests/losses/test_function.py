"""Tests of `kiln.losses.function`: loss names, `LossFunction` and its weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kiln.losses import LOSS_NAMES, LossFunction, resolve_loss
from kiln.losses.checks import CLASSES, ELEMENTWISE, OTHER
from kiln.losses.function import normalize_name

N, C = 6, 4


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inputs(name: str) -> tuple[Tensor, Tensor]:
    """Return a valid random `(output, target)` pair for the named loss."""
    g = _gen()
    scores = torch.randn(N, C, generator=g)
    labels = torch.randint(0, C, (N,), generator=g)
    values = torch.randn(N, C, generator=g)
    if name == "cross_entropy":
        return scores, labels
    if name == "nll":
        return scores.log_softmax(1), labels
    if name == "bce":
        return scores.sigmoid(), torch.rand(N, C, generator=g)
    if name in ("bce_with_logits", "multilabel_soft_margin"):
        return scores, torch.randint(0, 2, (N, C), generator=g).float()
    if name == "kl_div":
        return scores.log_softmax(1), values.softmax(1)
    if name == "poisson_nll":
        return scores, torch.poisson(torch.full((N, C), 2.0), generator=g)
    if name == "soft_margin":
        return scores, torch.randint(0, 2, (N, C), generator=g).float() * 2 - 1
    return scores, values


REFERENCE = {
    "cross_entropy": F.cross_entropy,
    "nll": F.nll_loss,
    "bce": F.binary_cross_entropy,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "smooth_l1": F.smooth_l1_loss,
    "huber": F.huber_loss,
    "kl_div": lambda out, y: F.kl_div(out, y, reduction="batchmean"),
    "poisson_nll": F.poisson_nll_loss,
    "soft_margin": F.soft_margin_loss,
    "multilabel_soft_margin": F.multilabel_soft_margin_loss,
}


# --------------------------------------------------------------------------------------------
# Names


def test_loss_names_table_matches_reference():
    """Every loss in the table has a reference functional in these tests."""
    assert set(LOSS_NAMES) == set(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_resolve_loss_canonical_name(name):
    """A canonical name resolves to a `LossFunction` carrying that name."""
    loss = resolve_loss(name)
    assert isinstance(loss, LossFunction)
    assert loss.name == name


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("CrossEntropyLoss", "cross_entropy"),
        ("MSELoss", "mse"),
        ("BCEWithLogits", "bce_with_logits"),
        ("BCEWithLogitsLoss", "bce_with_logits"),
        ("Cross-Entropy", "cross_entropy"),
        ("CROSS_ENTROPY", "cross_entropy"),
        ("  mse  ", "mse"),
        ("NLLLoss", "nll"),
        ("BCELoss", "bce"),
        ("L1Loss", "l1"),
        ("SmoothL1Loss", "smooth_l1"),
        ("HuberLoss", "huber"),
        ("KLDivLoss", "kl_div"),
        ("PoissonNLLLoss", "poisson_nll"),
        ("SoftMarginLoss", "soft_margin"),
        ("MultiLabelSoftMarginLoss", "multilabel_soft_margin"),
        ("ce", "cross_entropy"),
        ("mae", "l1"),
        ("mean_squared_error", "mse"),
        ("binary_cross_entropy", "bce"),
        ("kl_divergence", "kl_div"),
    ],
)
def test_normalize_name_aliases(given, canonical):
    """Torch class names, other spellings and aliases map to the canonical name."""
    assert normalize_name(given) == canonical
    assert resolve_loss(given).name == canonical


@pytest.mark.parametrize(
    ("name", "kind"),
    [("cross_entropy", CLASSES), ("nll", CLASSES), ("mse", ELEMENTWISE), ("bce", ELEMENTWISE)],
)
def test_resolve_loss_kind(name, kind):
    """Named losses carry the kind of target they expect."""
    assert resolve_loss(name).kind == kind


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_named_loss_equals_torch_functional(name):
    """Each named loss computes the same value as the torch functional."""
    output, target = _inputs(name)
    expected = REFERENCE[name](output, target)
    torch.testing.assert_close(resolve_loss(name)(output, target), expected)


def test_kl_div_is_batchmean():
    """The unweighted kl_div is the KL divergence per sample, not per element."""
    output, target = _inputs("kl_div")
    value = resolve_loss("kl_div")(output, target)
    torch.testing.assert_close(value, F.kl_div(output, target, reduction="sum") / N)


def test_resolve_loss_unknown_name_lists_known():
    """An unknown name raises ValueError listing the known names."""
    with pytest.raises(ValueError, match=r"Unknown loss 'hinge'\. Known names: bce, .*mse"):
        resolve_loss("hinge")


@pytest.mark.parametrize("bad", [42, 1.5, [F.mse_loss]])
def test_resolve_loss_not_callable(bad):
    """Anything but a name or a callable raises TypeError."""
    with pytest.raises(TypeError, match="`loss` must be a loss name"):
        resolve_loss(bad)


def test_resolve_loss_none_and_passthrough():
    """`None` stays `None` and a `LossFunction` passes through unchanged."""
    loss = resolve_loss("mse")
    assert resolve_loss(None) is None
    assert resolve_loss(loss) is loss


@pytest.mark.parametrize(
    ("module", "kind"),
    [(nn.CrossEntropyLoss(), CLASSES), (nn.MSELoss(), ELEMENTWISE), (nn.L1Loss(), ELEMENTWISE)],
)
def test_resolve_loss_torch_module(module, kind):
    """A torch loss module is wrapped under its class name, with its kind, and computes the same."""
    loss = resolve_loss(module)
    assert loss.name == type(module).__name__
    assert loss.kind == kind
    output, target = _inputs("cross_entropy" if kind == CLASSES else "mse")
    torch.testing.assert_close(loss(output, target), module(output, target))


def test_resolve_loss_plain_function():
    """A plain function is wrapped under its `__name__` and checked as kind 'other'."""

    def max_error(output, target):
        return (output - target).abs().max()

    loss = resolve_loss(max_error)
    assert loss.name == "max_error"
    assert loss.kind == OTHER
    output, target = _inputs("mse")
    torch.testing.assert_close(loss(output, target), (output - target).abs().max())


def test_loss_function_repr():
    """The repr names the loss."""
    assert repr(resolve_loss("CrossEntropyLoss")) == "LossFunction(cross_entropy)"


# --------------------------------------------------------------------------------------------
# Weights


def _weights(shape: tuple[int, ...]) -> Tensor:
    return torch.rand(*shape, generator=_gen(1)) + 0.1


@pytest.mark.parametrize("name", ["mse", "l1", "smooth_l1", "bce_with_logits"])
@pytest.mark.parametrize("shape", [(N,), (N, 1)])
def test_weighted_elementwise_per_sample(name, shape):
    """Per-sample weights give `mean(w * unreduced)` over all elements."""
    output, target = _inputs(name)
    weight = _weights(shape)
    unreduced = REFERENCE[name](output, target, reduction="none")
    expected = (weight.reshape(N, 1) * unreduced).mean()
    torch.testing.assert_close(resolve_loss(name)(output, target, weight), expected)


def test_weighted_cross_entropy_per_sample():
    """Per-sample weights of shape (N,) weigh each sample's cross-entropy."""
    output, target = _inputs("cross_entropy")
    weight = _weights((N,))
    expected = (weight * F.cross_entropy(output, target, reduction="none")).mean()
    torch.testing.assert_close(resolve_loss("cross_entropy")(output, target, weight), expected)


def test_weighted_cross_entropy_per_sample_column():
    """Per-sample weights of shape (N, 1) weigh each sample's cross-entropy."""
    output, target = _inputs("cross_entropy")
    weight = _weights((N, 1))
    expected = (weight.reshape(-1) * F.cross_entropy(output, target, reduction="none")).mean()
    torch.testing.assert_close(resolve_loss("cross_entropy")(output, target, weight), expected)


def test_weighted_mse_per_output():
    """Per-output weights of the target's shape weigh each element."""
    output, target = _inputs("mse")
    weight = _weights((N, C))
    expected = (weight * (output - target) ** 2).mean()
    torch.testing.assert_close(resolve_loss("mse")(output, target, weight), expected)


@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
def test_weighted_classes_per_class_weights_pick_true_class(name):
    """Weights of shape (N, classes) weigh each sample by the weight of its true class."""
    output, target = _inputs(name)
    weight = _weights((N, C))
    picked = weight[torch.arange(N), target]
    expected = (picked * REFERENCE[name](output, target, reduction="none")).mean()
    torch.testing.assert_close(resolve_loss(name)(output, target, weight), expected)


def test_weighted_ones_equal_unweighted_mse():
    """Weights of one give the unweighted loss."""
    output, target = _inputs("mse")
    loss = resolve_loss("mse")
    torch.testing.assert_close(loss(output, target, torch.ones(N)), loss(output, target))


def test_weighted_ones_equal_unweighted_kl_div():
    """For kl_div too, weights of one give the unweighted (batchmean) loss."""
    output, target = _inputs("kl_div")
    loss = resolve_loss("kl_div")
    torch.testing.assert_close(loss(output, target, torch.ones(N)), loss(output, target))


@pytest.mark.parametrize(
    ("module", "name"),
    [(nn.MSELoss(), "mse"), (nn.L1Loss(), "l1"), (nn.CrossEntropyLoss(), "cross_entropy")],
)
def test_weighted_torch_module(module, name):
    """A torch loss module is weighted through a copy with reduction='none'."""
    output, target = _inputs(name)
    weight = _weights((N,))
    unreduced = REFERENCE[name](output, target, reduction="none")
    expected = (weight.reshape(-1, *([1] * (unreduced.dim() - 1))) * unreduced).mean()
    torch.testing.assert_close(resolve_loss(module)(output, target, weight), expected)
    assert module.reduction == "mean"


def test_weighted_torch_module_per_class_weights():
    """`nn.CrossEntropyLoss` with (N, classes) weights picks each sample's true class."""
    output, target = _inputs("cross_entropy")
    weight = _weights((N, C))
    unreduced = F.cross_entropy(output, target, reduction="none")
    expected = (weight[torch.arange(N), target] * unreduced).mean()
    value = resolve_loss(nn.CrossEntropyLoss())(output, target, weight)
    torch.testing.assert_close(value, expected)


def test_weighted_plain_callable_without_reduction_raises():
    """A callable with neither `reduction` nor a weight parameter cannot be weighted."""

    def plain(output, target):
        return ((output - target) ** 2).mean()

    output, target = _inputs("mse")
    loss = resolve_loss(plain)
    with pytest.raises(TypeError, match=r"The loss plain cannot weigh samples"):
        loss(output, target, _weights((N,)))


RECEIVED: list[Tensor] = []


def _loss_taking_weights(output, target, weights):
    RECEIVED.append(weights)
    return (weights.unsqueeze(1) * (output - target).abs()).sum()


def _loss_taking_weight(output, target, weight):
    RECEIVED.append(weight)
    return (weight.unsqueeze(1) * (output - target).abs()).sum()


@pytest.mark.parametrize("fn", [_loss_taking_weights, _loss_taking_weight])
def test_weighted_callable_receives_weights(fn):
    """A callable with a `weights` (or `weight`) parameter receives the weights as they are."""
    output, target = _inputs("l1")
    weight = _weights((N,))
    RECEIVED.clear()
    value = resolve_loss(fn)(output, target, weight)
    assert len(RECEIVED) == 1
    assert RECEIVED[0] is weight
    torch.testing.assert_close(value, (weight.unsqueeze(1) * (output - target).abs()).sum())


def test_unweighted_callable_with_weights_parameter():
    """Without weights, a callable with a `weights` parameter is called as `fn(output, target)`."""

    def my_loss(output, target, weights=None):
        assert weights is None
        return (output - target).abs().mean()

    output, target = _inputs("l1")
    expected = (output - target).abs().mean()
    torch.testing.assert_close(resolve_loss(my_loss)(output, target), expected)


# --------------------------------------------------------------------------------------------
# postproc and arming


def test_postproc_picked_up_from_callable():
    """A callable's `postproc` attribute becomes the loss's `postproc`."""

    def my_loss(output, target):
        return F.binary_cross_entropy_with_logits(output, target)

    my_loss.postproc = torch.sigmoid
    assert resolve_loss(my_loss).postproc is torch.sigmoid


def test_postproc_none_by_default():
    """Named losses have no `postproc`."""
    assert resolve_loss("bce_with_logits").postproc is None


def test_loss_function_checks_first_call():
    """The first call of an armed loss checks its inputs and disarms it."""
    loss = resolve_loss("mse")
    assert loss.armed
    with pytest.raises(ValueError, match=r"y\.view\(-1, 1\)"):
        loss(torch.zeros(N, 1), torch.zeros(N))
    assert not loss.armed


def test_loss_function_reads_the_ignored_label_and_the_target_range():
    """Named cross-entropy and NLL ignore -100, a module its own `ignore_index`; BCE is [0, 1]."""
    assert resolve_loss("cross_entropy").ignore_index == -100
    assert resolve_loss("nll").ignore_index == -100
    assert resolve_loss(nn.CrossEntropyLoss(ignore_index=0)).ignore_index == 0
    assert resolve_loss("mse").ignore_index is None
    assert resolve_loss("bce").unit_interval
    assert resolve_loss("bce_with_logits").unit_interval
    assert resolve_loss(nn.BCEWithLogitsLoss()).unit_interval
    assert not resolve_loss("mse").unit_interval


def test_loss_function_checks_only_torchs_own_losses_for_one_tensor():
    """A tuple output fails for torch's losses; a subclass or a function of its own may take it."""

    class FirstOfTuple(nn.CrossEntropyLoss):
        def forward(self, output, target):  # type: ignore[override]
            return super().forward(output[0], target)

    output, target = (torch.zeros(4, 3), torch.zeros(4, 2)), torch.zeros(4, dtype=torch.long)
    for loss in ("cross_entropy", nn.CrossEntropyLoss()):
        with pytest.raises(TypeError, match=r"takes the model's output as one tensor"):
            resolve_loss(loss)(output, target)
    assert float(resolve_loss(FirstOfTuple())(output, target)) > 0
    assert float(resolve_loss(lambda out, y: out[0].sum())(output, target)) == 0
