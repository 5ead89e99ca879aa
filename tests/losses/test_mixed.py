"""MixedCriterion: kinds and scale from the dataset, per-column losses, weights, postproc."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

import kiln
from kiln.losses import MixedCriterion
from kiln.losses.mixed import guess_regression_flags, sample_targets


class ItemDataset(Dataset):
    """A dataset read item by item, with optional PytorchTrainer attributes."""

    def __init__(self, X, Y, **attributes):
        self.X, self.Y = X, Y
        for key, value in attributes.items():
            setattr(self, key, value)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, index):
        return self.X[index], self.Y[index]


def mixed_data(n=64):
    X = torch.randn(n, 3)
    Y = torch.stack([10 * X[:, 0] + 50, (X[:, 1] > 0).float()], 1)
    return X, Y


def test_kinds_and_scale_are_read_from_the_targets():
    X, Y = mixed_data()
    criterion = MixedCriterion((X, Y))
    assert criterion.kinds == ["regression", "binary"]
    assert torch.allclose(criterion.mean, torch.tensor([Y[:, 0].mean().item(), 0.0]))
    assert torch.allclose(criterion.std, torch.tensor([Y[:, 0].std(unbiased=False).item(), 1.0]))


def test_dataset_attributes_win_over_guessing():
    X, Y = mixed_data()
    dataset = ItemDataset(X, Y, regression_flags=[1, 1], scale=[[1.0, 2.0], [3.0, 0.0]])
    criterion = MixedCriterion(dataset)
    assert criterion.kinds == ["regression", "regression"]
    assert criterion.mean.tolist() == [1.0, 2.0]
    assert criterion.std.tolist() == [3.0, 1.0]  # a zero std would divide by zero: 1


def test_classification_columns_are_never_scaled():
    X, Y = mixed_data()
    criterion = MixedCriterion((X, Y), scale=[[5.0, 5.0], [2.0, 2.0]])
    assert criterion.mean.tolist() == [5.0, 0.0]
    assert criterion.std.tolist() == [2.0, 1.0]


def test_guessing_ignores_nan_and_needs_only_zeros_and_ones():
    targets = torch.tensor([[0.0, 0.0, 2.0], [1.0, float("nan"), 0.0], [1.0, 1.0, 1.0]])
    assert guess_regression_flags(targets.double().numpy()) == [0, 0, 1]


def test_sampling_reads_at_most_1000_rows_the_same_way_for_tensors_and_items():
    X, Y = torch.randn(3000, 2), torch.randn(3000, 2)
    from_tensors = sample_targets(TensorDataset(X, Y))
    from_items = sample_targets(ItemDataset(X, Y))
    assert from_tensors.shape == (1000, 2)
    assert (from_tensors == from_items).all()
    assert (sample_targets((X, Y), seed=1) != from_tensors).any()  # the seed chooses the rows


def test_verbose_says_what_it_guessed(capsys):
    MixedCriterion(mixed_data(), verbose=True)
    out = capsys.readouterr().out
    assert "MESSAGE: Guessing regression flags from dataset..." in out
    assert "MESSAGE: Regression flags: [1, 0]" in out
    assert "MESSAGE: Got constants:" in out
    MixedCriterion(regression_flags=[0], verbose=True)
    assert "Classification only dataset, no scaling required" in capsys.readouterr().out


def test_losses_are_mse_on_scaled_targets_and_bce_on_logits():
    X, Y = mixed_data()
    criterion = MixedCriterion((X, Y))
    output = torch.randn(64, 2)
    scaled_target = (Y[:, 0] - criterion.mean[0]) / criterion.std[0]
    mse = F.mse_loss(output[:, 0], scaled_target)
    bce = F.binary_cross_entropy_with_logits(output[:, 1], Y[:, 1])
    assert torch.allclose(criterion(output, Y), (mse + bce) / 2)
    unscaled_mse = F.mse_loss(output[:, 0] * criterion.std[0] + criterion.mean[0], Y[:, 0])
    assert torch.allclose(criterion(output, Y, unscaled=True), (unscaled_mse + bce) / 2)
    scaled, unscaled = criterion.both(output, Y)
    assert torch.allclose(scaled, criterion(output, Y))
    assert torch.allclose(unscaled, criterion(output, Y, unscaled=True))


def test_nan_targets_are_left_out():
    X, Y = mixed_data()
    criterion = MixedCriterion((X, Y))
    output = torch.randn(64, 2, requires_grad=True)
    holed = Y.clone()
    holed[:10, 0] = float("nan")
    expected = (criterion.columns(output[10:], Y[10:])[0] + criterion.columns(output, Y)[1]) / 2
    loss = criterion(output, holed)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.isfinite(output.grad).all()
    assert (output.grad[:10, 0] == 0).all()


def test_weights_per_sample_per_column_and_unnormalised():
    X, Y = mixed_data()
    criterion = MixedCriterion((X, Y))
    output = torch.randn(64, 2)
    plain = criterion(output, Y)
    assert torch.allclose(criterion(output, Y, torch.full((64,), 2.0)), 2 * plain)
    w = torch.rand(64)
    assert torch.allclose(criterion(output, Y, w), criterion(output, Y, w[:, None]))
    columns = torch.stack([torch.ones(64), torch.zeros(64)], 1)  # the binary column off
    assert torch.allclose(criterion(output, Y, columns), criterion.columns(output, Y)[0] / 2)


def test_multiclass_column_is_cross_entropy_with_class_weights():
    logits, labels = torch.randn(32, 4), torch.randint(0, 4, (32,))
    class_weights = torch.tensor([1.0, 2.0, 0.5, 1.0])
    criterion = MixedCriterion(kinds=["classes"], class_weights=class_weights)
    expected = F.cross_entropy(logits, labels, class_weights, reduction="none").mean()
    assert torch.allclose(criterion(logits, labels), expected)
    assert torch.allclose(criterion.postproc(logits), logits.softmax(1))


def test_mixed_layout_with_a_multiclass_group():
    n = 16
    target = torch.stack(
        [torch.randn(n) * 5, torch.randint(0, 3, (n,)).float(), torch.randint(0, 2, (n,)).float()],
        1,
    )
    criterion = MixedCriterion(kinds=["regression", 3, "binary"], scale=[[0, 0, 0], [5, 1, 1]])
    output = torch.randn(n, 5)
    ce = F.cross_entropy(output[:, 1:4], target[:, 1].long())
    bce = F.binary_cross_entropy_with_logits(output[:, 4], target[:, 2])
    mse = F.mse_loss(output[:, 0], target[:, 0] / 5)
    assert torch.allclose(criterion(output, target), (mse + ce + bce) / 3)
    predicted = criterion.postproc(output)
    assert predicted.shape == (n, 5)
    assert torch.allclose(predicted[:, 0], output[:, 0] * 5)
    assert torch.allclose(predicted[:, 1:4], output[:, 1:4].softmax(1))
    assert torch.allclose(predicted[:, 4], output[:, 4].sigmoid())
    # Per-output weights: the multiclass column takes its true class's weight.
    weights = torch.ones(n, 5)
    weights[:, 1:4] = torch.tensor([0.0, 1.0, 0.0])
    picked = (target[:, 1] == 1).float()
    per_column = torch.stack([torch.ones(n), picked, torch.ones(n)], 1)
    assert torch.allclose(criterion(output, target, weights), criterion(output, target, per_column))


def test_ensemble_members_each_take_their_own_loss():
    n, members = 12, 3
    target = torch.stack([torch.randn(n) * 5, torch.randint(0, 3, (n,)).float()], 1)
    target[0, 0] = float("nan")  # a missing target is left out of every member's loss
    criterion = MixedCriterion(kinds=["regression", 3], scale=[[1, 0], [5, 1]], smoothing=0.1)
    output = torch.randn(n, members, 4)
    weights = torch.rand(n)
    for unscaled in (False, True):
        each = [criterion(output[:, m], target, weights, unscaled=unscaled) for m in range(members)]
        together = criterion(output, target, weights, unscaled=unscaled)
        assert torch.allclose(together, torch.stack(each).mean())
    scaled, unscaled = criterion.both(output, target)
    assert torch.allclose(unscaled, criterion(output, target, unscaled=True))


def test_postproc_unscales_and_applies_the_sigmoid():
    criterion = MixedCriterion(kinds=["regression", "binary"], scale=[[10, 0], [2, 1]])
    assert criterion.postproc(torch.tensor([[1.0, 0.0]])).tolist() == [[12.0, 0.5]]


def test_state_dict_round_trips_through_a_safe_file(tmp_path):
    criterion = MixedCriterion(mixed_data(), class_weights=[1.0, 2.0])
    torch.save(criterion.state_dict(), tmp_path / "c.pt")
    again = MixedCriterion.from_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    output, target = torch.randn(8, 2), mixed_data(8)[1]
    assert again.kinds == criterion.kinds
    assert torch.equal(again(output, target), criterion(output, target))


def test_a_plain_trainer_takes_it_as_its_loss():
    X, Y = mixed_data()
    criterion = MixedCriterion((X, Y))
    trainer = kiln.Trainer(kiln.MLP(3, [8], 2), loss=criterion, device="cpu", progress=False)
    history = trainer.fit((X, torch.rand(64), Y), epochs=2)
    assert len(history) == 2
    assert math.isfinite(history.loss[-1])
    predicted = trainer.predict(X)
    assert ((predicted[:, 1] > 0) & (predicted[:, 1] < 1)).all()
    assert predicted[:, 0].mean() > 20  # un-scaled: around the targets' mean of 50


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "needs the kind of each target column"),
        ({"kinds": ["regression"]}, "has regression columns but no `scale"),
        ({"kinds": ["ordinal"]}, "each kind must be 'regression', 'binary', 'classes'"),
        ({"kinds": [1]}, "each kind must be"),
        ({"kinds": []}, "needs at least one target column"),
        ({"kinds": ["classes", "classes"]}, "only one column may be 'classes'"),
        ({"regression_flags": ["x"]}, "`regression_flags` must be 1 or 0"),
        ({"regression_flags": [1], "scale": [[0, 0], [1, 1]]}, "with 1 values each"),
    ],
)
def test_bad_arguments_are_explained(arguments, message):
    with pytest.raises(ValueError, match=message):
        MixedCriterion(**arguments)


def test_an_empty_dataset_is_refused():
    with pytest.raises(ValueError, match="received an empty dataset"):
        MixedCriterion((torch.zeros(0, 2), torch.zeros(0, 1)))


def test_shapes_that_do_not_fit_are_explained():
    criterion = MixedCriterion(regression_flags=[0, 0])
    with pytest.raises(ValueError, match=r"output has 3 columns, but the target columns"):
        criterion(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"expects outputs \(batch, columns\) and targets"):
        criterion(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"an ensemble's outputs: \(batch, members, columns\)"):
        criterion(torch.zeros(4, 3, 2), torch.zeros(5, 2))  # members' rows not the targets'
    with pytest.raises(ValueError, match=r"weights must have shape \(4,\) or \(4, 1\)"):
        criterion(torch.zeros(4, 2), torch.zeros(4, 2), torch.ones(4, 7))


def test_print_goes_to_stdout_only_when_verbose(capsys):
    MixedCriterion(mixed_data())
    assert capsys.readouterr().out == ""
