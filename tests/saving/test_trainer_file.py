"""`kiln.saving`: trainer.save / kiln.load round trips, kiln.build recipes, weight export."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import kiln
from kiln.checkpoint.files import atomic_save, safe_load
from kiln.saving.recipe import recipe_of
from kiln.saving.trainer_file import export_weights, save_trainer

X = torch.randn(48, 4)
Y = torch.randint(0, 3, (48,))


class MyNet(nn.Module):
    def __init__(self, features: int, hidden: int = 5) -> None:
        super().__init__()
        self.body = nn.Linear(features, hidden)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


class Tied(nn.Module):
    """An embedding reused as the output layer: two state_dict keys, one storage."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(6, 4)
        self.out = nn.Linear(4, 6, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(x))


class SmallMLP(kiln.MLP):
    def __init__(self) -> None:
        super().__init__(4, [6], 3)


def make_net(features: int, hidden: int = 5) -> nn.Module:
    return MyNet(features, hidden)


def label_smoothing_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(output, target, label_smoothing=0.1)


def trained(model: nn.Module, epochs: int = 2, **options: Any) -> kiln.Trainer:
    options = {"loss": "cross_entropy", "metrics": ["accuracy"], **options}
    trainer = kiln.Trainer(model, device="cpu", progress=False, **options)
    trainer.fit((X, Y), epochs=epochs, batch_size=16)
    return trainer


def load(path: Path, **options: Any) -> kiln.Trainer:
    return kiln.load(path, device="cpu", progress=False, **options)


def saved(trainer: kiln.Trainer, tmp_path: Path) -> Path:
    return save_trainer(trainer, tmp_path / "run.kiln")


def adam_steps(trainer: kiln.Trainer) -> list[float]:
    assert trainer.optimizer is not None
    return [float(state["step"]) for state in trainer.optimizer.state.values()]


def test_mlp_round_trip_restores_everything(tmp_path: Path) -> None:
    trainer = trained(kiln.MLP(4, [8], 3))
    path = saved(trainer, tmp_path)
    loaded = load(path)
    assert isinstance(loaded.model, kiln.MLP)
    assert torch.equal(loaded.predict(X), trainer.predict(X))
    assert loaded.loss is not None
    assert loaded.loss.name == "cross_entropy"
    assert [metric.name for metric in loaded.metrics] == ["accuracy"]
    assert isinstance(loaded.optimizer, torch.optim.Adam)
    assert adam_steps(loaded) == adam_steps(trainer) == [6.0] * 4
    assert loaded.state.epoch == 2
    assert loaded.state.step == 6
    assert loaded.history.loss == trainer.history.loss
    assert loaded.evaluate((X, Y)).accuracy == trainer.evaluate((X, Y)).accuracy


def test_file_holds_marker_version_date_and_plain_data(tmp_path: Path) -> None:
    contents = safe_load(saved(trainer=trained(kiln.MLP(4, [8], 3), epochs=1), tmp_path=tmp_path))
    assert contents["kiln"] == "saved trainer"
    assert contents["format"] == 1
    assert contents["kiln_version"] == kiln.__version__
    assert contents["saved_at"].startswith("20")
    assert contents["recipe"]["target"] == "kiln:MLP"
    assert contents["recipe"]["kwargs"]["hidden"] == [8]
    assert contents["loss"] == {"kind": "name", "name": "cross_entropy"}
    assert contents["optimizer"]["target"] == "torch.optim:Adam"
    assert contents["metrics"] == [{"name": "accuracy", "spec": "accuracy"}]


def test_fit_after_load_continues_as_the_original_would(tmp_path: Path) -> None:
    trainer = trained(kiln.MLP(4, [8], 3))
    loaded = load(saved(trainer, tmp_path))
    for continued in (trainer, loaded):
        kiln.seed_everything(3)  # the same data order for both
        continued.fit((X, Y), epochs=1, batch_size=16)
    assert loaded.state.epoch == 3
    assert len(loaded.history) == 3
    assert loaded.history.epoch == [1, 2, 3]
    assert adam_steps(loaded) == [9.0] * 4
    # Equal only if the optimizer's moments were restored, not started afresh.
    for original, reloaded in zip(
        trainer.model.parameters(), loaded.model.parameters(), strict=True
    ):
        assert torch.equal(original, reloaded)


def test_build_records_a_class_and_its_arguments(tmp_path: Path) -> None:
    net = kiln.build(MyNet, 4, hidden=7)
    assert recipe_of(net)["target"] == "tests.saving.test_trainer_file:MyNet"
    trainer = trained(net, epochs=1)
    loaded = load(saved(trainer, tmp_path))
    assert isinstance(loaded.model, MyNet)
    assert loaded.model.body.out_features == 7
    assert torch.equal(loaded.predict(X), trainer.predict(X))


def test_builder_function_must_be_passed_at_load(tmp_path: Path) -> None:
    trainer = trained(kiln.build(make_net, 4, hidden=6), epochs=1)
    path = saved(trainer, tmp_path)
    with pytest.raises(ValueError, match=r"builder=tests\.saving\.test_trainer_file\.make_net"):
        load(path)
    loaded = load(path, builder=make_net)
    assert loaded.model.body.out_features == 6
    assert torch.equal(loaded.predict(X), trainer.predict(X))


def test_class_needing_arguments_without_build_needs_model(tmp_path: Path) -> None:
    trainer = trained(nn.Linear(4, 3), epochs=1)
    path = saved(trainer, tmp_path)
    message = (
        r"torch\.nn\.Linear needs the arguments in_features, out_features.*model=.*kiln\.build"
    )
    with pytest.raises(ValueError, match=message):
        load(path)
    loaded = load(path, model=nn.Linear(4, 3))
    assert torch.equal(loaded.predict(X), trainer.predict(X))


def test_class_without_arguments_is_rebuilt_by_its_path(tmp_path: Path) -> None:
    trainer = trained(SmallMLP(), epochs=1)
    assert recipe_of(trainer.model)["target"] == "tests.saving.test_trainer_file:SmallMLP"
    loaded = load(saved(trainer, tmp_path))
    assert type(loaded.model) is SmallMLP
    assert torch.equal(loaded.predict(X), trainer.predict(X))


def test_lambda_builder_saves_but_load_needs_model(tmp_path: Path) -> None:
    trainer = trained(kiln.build(lambda: MyNet(4)), epochs=1)
    path = saved(trainer, tmp_path)
    with pytest.raises(ValueError, match=r"<lambda>.*cannot be found.*model="):
        load(path)
    assert torch.equal(load(path, model=MyNet(4)).predict(X), trainer.predict(X))


def test_build_refuses_arguments_that_are_not_plain_data() -> None:
    with pytest.raises(TypeError, match=r"argument `hidden` of MyNet is a Tensor, not plain"):
        kiln.build(MyNet, 4, hidden=torch.tensor(8))
    with pytest.raises(TypeError, match=r"argument `features`.*\['a'\]\[0\] is a type"):
        kiln.build(make_net, {"a": [nn.ReLU]})
    with pytest.raises(TypeError, match=r"returned a str; expected a torch\.nn\.Module"):
        kiln.build(str, "not a model")


def test_mlp_with_an_activation_class_records_its_name() -> None:
    assert recipe_of(kiln.MLP(2, 3, 1, act=nn.ReLU))["kwargs"]["act"] == "relu"
    recipe = recipe_of(kiln.MLP(2, 3, 1, act=nn.Mish))
    assert recipe["problem"] == "its argument `act` is a type, not plain data"


def test_other_architecture_names_the_mismatch(tmp_path: Path) -> None:
    path = saved(trained(kiln.MLP(4, [8], 3), epochs=1), tmp_path)
    with pytest.raises(ValueError, match=r"another architecture.*different shapes: 0\.bias"):
        load(path, model=kiln.MLP(4, [16], 3))
    with pytest.raises(ValueError, match=r"missing from the file: 4\.bias"):
        load(path, model=kiln.MLP(4, [8, 8], 3))


def crafted(tmp_path: Path, **changes: Any) -> Path:
    contents = safe_load(saved(trained(kiln.MLP(4, [8], 3), epochs=1), tmp_path))
    for key, value in changes.items():
        contents[key] = {**contents[key], **value}
    return atomic_save(contents, tmp_path / "crafted.kiln")


@pytest.mark.parametrize("target", ["os:system", "builtins:eval", "subprocess:Popen"])
def test_a_file_naming_a_function_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args))
    marker = tmp_path / "ran"
    recipe = {"target": target, "args": [f"touch {marker}"], "kwargs": {}, "problem": None}
    path = crafted(tmp_path, recipe=recipe)
    with pytest.raises(ValueError, match=r"Refused to load .*not call it"):
        load(path)
    recipe["kind"] = "builder"  # a builder is never even looked up
    with pytest.raises(ValueError, match=r"never calls a function named in a file"):
        load(crafted(tmp_path, recipe=recipe))
    assert calls == []
    assert not marker.exists()


def test_a_safetensors_file_naming_a_function_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args))
    recipe = {"kind": "class", "target": "os:system", "args": ["true"], "kwargs": {}}
    path = tmp_path / "evil.safetensors"
    save_file({"w": torch.ones(1)}, path, metadata={"kiln_recipe": json.dumps(recipe)})
    with pytest.raises(ValueError, match=r"Refused to load .*os\.system"):
        load(path)
    assert calls == []


def test_a_file_naming_a_function_as_optimizer_is_refused(tmp_path: Path) -> None:
    path = crafted(tmp_path, optimizer={"target": "os:system"})
    with pytest.raises(ValueError, match=r"Refused to load .*os\.system.*torch\.optim"):
        load(path)


def test_losses_and_metrics_not_recorded_by_name_must_be_given(tmp_path: Path) -> None:
    def max_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return output.max()

    trainer = trained(kiln.MLP(4, [8], 3), 1, loss=label_smoothing_loss, metrics=[max_error])
    path = saved(trainer, tmp_path)
    message = r"loss=\.\.\. \(the loss label_smoothing_loss.*metrics=\[\.\.\.\].*max_error"
    with pytest.raises(ValueError, match=message):
        load(path)
    loaded = load(path, loss=label_smoothing_loss, metrics=[max_error])
    assert loaded.evaluate((X, Y)).loss == pytest.approx(trainer.evaluate((X, Y)).loss)


def test_torch_loss_with_class_weights_and_param_groups_are_rebuilt(tmp_path: Path) -> None:
    net = kiln.build(MyNet, 4)
    groups = [{"params": net.body.parameters(), "lr": 0.1}, {"params": net.head.parameters()}]
    weight = torch.tensor([1.0, 2.0, 0.5])
    trainer = trained(
        net,
        1,
        loss=nn.CrossEntropyLoss(weight=weight, label_smoothing=0.2),
        optimizer=torch.optim.SGD(groups, lr=0.01, momentum=0.9),
        metrics={"top2": "top2"},
    )
    loaded = load(saved(trainer, tmp_path))
    assert loaded.loss is not None
    assert isinstance(loaded.loss.fn, nn.CrossEntropyLoss)
    assert torch.equal(loaded.loss.fn.weight, weight)
    assert loaded.loss.fn.label_smoothing == 0.2
    assert isinstance(loaded.optimizer, torch.optim.SGD)
    assert [group["lr"] for group in loaded.optimizer.param_groups] == [0.1, 0.01]
    assert loaded.optimizer.param_groups[0]["params"][0] is loaded.model.body.weight
    assert [metric.name for metric in loaded.metrics] == ["top2"]
    assert loaded.evaluate((X, Y)).loss == pytest.approx(trainer.evaluate((X, Y)).loss)


def test_optimizer_over_parameters_outside_the_model_must_be_given(tmp_path: Path) -> None:
    net = kiln.MLP(4, [8], 3)
    outside = nn.Parameter(torch.zeros(1))
    trainer = trained(net, 1, optimizer=torch.optim.SGD([*net.parameters(), outside], lr=0.1))
    path = saved(trainer, tmp_path)
    with pytest.raises(ValueError, match=r"optimizer=\.\.\. \(the optimizer SGD is not recorded"):
        load(path)
    loaded = load(path, optimizer="sgd")  # over other parameters: starts fresh
    assert isinstance(loaded.optimizer, torch.optim.SGD)
    assert loaded.optimizer.param_groups[0]["lr"] == 0.01


def test_another_optimizer_given_at_load_starts_fresh(tmp_path: Path) -> None:
    loaded = load(saved(trained(kiln.MLP(4, [8], 3), 1), tmp_path), optimizer="sgd")
    assert isinstance(loaded.optimizer, torch.optim.SGD)
    assert not loaded.optimizer.state


def test_run_checkpoint_loads_with_model(tmp_path: Path) -> None:
    trainer = trained(kiln.MLP(4, [8], 3), dir=tmp_path / "run")
    path = tmp_path / "run" / "last.ckpt"
    with pytest.raises(ValueError, match=r"no record of how the model was built.*model="):
        load(path)
    loaded = load(path, model=kiln.MLP(4, [8], 3), loss="cross_entropy", optimizer="adam")
    assert loaded.state.epoch == 2
    assert len(loaded.history) == 2
    assert adam_steps(loaded) == adam_steps(trainer)
    assert torch.equal(loaded.predict(X), trainer.predict(X))


def test_safetensors_export_loads_anywhere(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    trainer = trained(kiln.MLP(4, [8], 3), epochs=1)
    path = export_weights(trainer.model, tmp_path / "weights" / "net.safetensors")
    plain = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    plain.load_state_dict(load_file(path))
    assert torch.equal(plain(X), trainer.model(X))
    loaded = load(path)  # the recipe in the metadata rebuilds the MLP
    assert isinstance(loaded.model, kiln.MLP)
    assert loaded.optimizer is None
    assert torch.equal(loaded.predict(X), trainer.predict(X))


def test_safetensors_export_of_tied_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    net = Tied()
    path = export_weights(net, tmp_path / "tied.safetensors")
    fresh = Tied()
    fresh.load_state_dict(load_file(path))
    tokens = torch.tensor([0, 3, 5])
    assert torch.equal(fresh(tokens), net(tokens))
    assert fresh.out.weight is fresh.embed.weight
    assert torch.equal(load(path).predict(tokens), net(tokens).detach())


def test_pt_export_is_a_plain_state_dict(tmp_path: Path) -> None:
    net = kiln.MLP(4, [8], 3)
    path = export_weights(net, tmp_path / "net.pth")
    weights = torch.load(path, weights_only=True)
    assert sorted(weights) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    plain = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    plain.load_state_dict(weights)
    assert torch.equal(plain(X), net(X))
    with pytest.raises(ValueError, match=r"no record of how the model was built"):
        load(path)
    assert torch.equal(load(path, model=kiln.MLP(4, [8], 3)).predict(X), net(X).detach())


def test_export_refuses_an_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"suffix '\.h5'.*\.safetensors, \.pt, \.pth"):
        export_weights(nn.Linear(2, 1), tmp_path / "net.h5")


def test_load_refuses_files_it_does_not_know(tmp_path: Path) -> None:
    path = atomic_save({"hello": "world"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"does not recognise.*trainer\.save"):
        load(path)
    path = crafted(tmp_path, recipe={"kind": "script"})
    with pytest.raises(ValueError, match=r"recipe in .* is damaged"):
        load(path)
    path = crafted(tmp_path, loss={"kind": "torch"})  # without its class and arguments
    with pytest.raises(ValueError, match=r"loss, optimizer or metrics recorded in .* damaged"):
        load(path)


def test_a_ranger_trainer_loads_with_its_lookahead_and_state(tmp_path):
    """RAdam inside Lookahead is recorded as such: `kiln.load` needs no `optimizer=`."""
    trainer = kiln.Trainer(
        kiln.MLP(3, [8], 1), loss="mse", optimizer="ranger", device="cpu", progress=False
    )
    X, Y = torch.randn(32, 3), torch.randn(32, 1)
    trainer.fit((X, Y), epochs=2, batch_size=8)
    again = kiln.load(trainer.save(tmp_path / "ranger.kiln"), device="cpu", progress=False)
    assert isinstance(again.optimizer, kiln.optim.Lookahead)
    assert isinstance(again.optimizer.optimizer, torch.optim.RAdam)
    assert (again.optimizer.k, again.optimizer.steps) == (trainer.optimizer.k, 8)
    in_order = kiln.Data((X, Y), batch_size=8, shuffle=False)  # the same batches for both
    trainer.fit(in_order, epochs=1)
    again.fit(in_order, epochs=1)
    for mine, theirs in zip(trainer.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_a_plain_sequential_is_not_rebuilt_empty(tmp_path):
    """nn.Sequential(*layers) takes its layers as arguments: without a recipe, ask for them."""
    trainer = kiln.Trainer(
        torch.nn.Sequential(torch.nn.Linear(2, 1)), loss="mse", device="cpu", progress=False
    )
    path = trainer.save(tmp_path / "plain.kiln")
    with pytest.raises(ValueError, match="Sequential takes its layers as arguments.*model="):
        kiln.load(path)
    again = kiln.load(path, model=torch.nn.Sequential(torch.nn.Linear(2, 1)), progress=False)
    assert torch.equal(again.model[0].weight, trainer.model[0].weight)
