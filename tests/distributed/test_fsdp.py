"""FSDP2 sharding (`kiln.distributed.fsdp`) and sharded run checkpoints (`kiln.distributed.dcp`).

In one process (a process group of one rank where sharding needs one), and on two gloo ranks
started by `kiln.distributed.launch.launch` (slow): a run sharded over two ranks is saved, then
loaded on two ranks, on one, and into an unsharded model, always to the same weights and moments.
"""

from __future__ import annotations

import copy
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

import kiln
from kiln.checkpoint.files import CheckpointError, atomic_save
from kiln.distributed import dcp as sharded
from kiln.distributed.dcp import (
    LAST_DCP,
    TRAINER_FILE,
    find_sharded,
    load_sharded,
    load_trainer_sharded,
    save_sharded,
    save_trainer_sharded,
)
from kiln.distributed.fsdp import full_state, is_sharded, load_full_state, shard_model, shard_units
from kiln.distributed.launch import launch, single_process_group
from tests.distributed import fsdp_script


def assert_same(ours: Any, theirs: Any, where: str = "state") -> None:
    """Nested dicts, lists and tensors equal bitwise."""
    if isinstance(ours, torch.Tensor):
        assert torch.equal(ours, theirs), where
    elif isinstance(ours, dict):
        assert sorted(ours, key=str) == sorted(theirs, key=str), where
        for key in ours:
            assert_same(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), where
        for index, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(mine, other, f"{where}[{index}]")
    else:
        assert ours == theirs, where


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.inner(x))


class Tower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.act(x))


def test_units_are_layers_with_parameters_looking_inside_containers():
    tower = Tower()
    assert shard_units(tower) == [tower.embed, tower.blocks[0], tower.blocks[1], tower.head]


def test_units_can_be_chosen_by_class_inner_ones_first():
    tower = Tower()
    assert shard_units(tower, modules=[Block]) == list(tower.blocks)
    assert shard_units(tower, modules=[Block, nn.Linear])[:2] == [
        tower.embed,
        tower.blocks[0].inner,
    ]


def test_units_refuse_a_class_alone_and_instances():
    with pytest.raises(TypeError, match=r"a list of module classes.*received <class"):
        shard_units(Tower(), modules=nn.Linear)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"classes, not instances.*received Linear"):
        shard_units(Tower(), modules=[nn.Linear(2, 2)])  # type: ignore[list-item]


def test_sharding_needs_a_module_and_a_process_group():
    with pytest.raises(TypeError, match="expects an nn.Module; received str"):
        shard_model("net")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="needs a process group.*kiln.launch"):
        shard_model(Tower())


def test_sharding_twice_is_refused():
    with single_process_group():
        net = shard_model(Tower())
        assert is_sharded(net)
        with pytest.raises(ValueError, match="Tower is sharded already"):
            shard_model(net)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    fsdp_script.train(model, optimizer, 0, 1)


def test_one_rank_sharded_training_and_its_whole_state_match_unsharded():
    plain = fsdp_script.make_model()
    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=0.01)
    train_steps(plain, plain_optimizer)
    with single_process_group():
        net = shard_model(fsdp_script.make_model())
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        train_steps(net, optimizer)
        weights, moments = full_state(net, optimizer)
    # The layout of `state_dict()`, so that kiln.save files load into an unsharded trainer.
    assert_same(weights, plain.state_dict())
    assert_same(moments, plain_optimizer.state_dict())


def test_whole_state_loads_into_a_sharded_model_and_training_goes_on_the_same():
    plain = fsdp_script.make_model()
    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=0.01)
    train_steps(plain, plain_optimizer)
    saved = copy.deepcopy((plain.state_dict(), plain_optimizer.state_dict()))  # not references
    train_steps(plain, plain_optimizer)
    with single_process_group():
        net = shard_model(fsdp_script.make_model())
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        load_full_state(net, optimizer, *saved)
        train_steps(net, optimizer)
        assert_same(full_state(net, optimizer), (plain.state_dict(), plain_optimizer.state_dict()))


def test_an_optimizer_over_other_parameters_is_named():
    net = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="2 parameter\\(s\\) that are not the model's"):
        full_state(net, optimizer)


def trained() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = fsdp_script.make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_steps(model, optimizer)
    return model, optimizer


def test_a_sharded_checkpoint_loads_into_another_model_and_optimizer(tmp_path):
    model, optimizer = trained()
    path = save_sharded(tmp_path, model, optimizer, {"epoch": 3})
    assert path == tmp_path / LAST_DCP
    other = fsdp_script.make_model()
    other_optimizer = torch.optim.Adam(other.parameters(), lr=0.01)
    assert load_sharded(tmp_path, other, other_optimizer) == {"epoch": 3}
    assert_same(other.state_dict(), model.state_dict())
    assert_same(other_optimizer.state_dict(), optimizer.state_dict())
    assert load_sharded(tmp_path / "empty", other) is None


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    model, optimizer = trained()
    save_sharded(tmp_path, model, optimizer, {"epoch": 1})
    real_save = sharded.dcp_save

    def crash(state: dict[str, Any], checkpoint_id: Path, no_dist: bool) -> None:
        real_save(state, checkpoint_id=checkpoint_id, no_dist=no_dist)  # the files, then a crash
        raise OSError("disk gone")

    monkeypatch.setattr(sharded, "dcp_save", crash)
    with pytest.raises(OSError, match="disk gone"):
        save_sharded(tmp_path, model, optimizer, {"epoch": 2})
    monkeypatch.undo()
    assert (tmp_path / f".{LAST_DCP}.tmp").is_dir()
    assert load_sharded(tmp_path, fsdp_script.make_model()) == {"epoch": 1}
    save_sharded(tmp_path, model, optimizer, {"epoch": 3})
    assert sorted(item.name for item in tmp_path.iterdir()) == [LAST_DCP]


def test_a_crash_between_the_renames_falls_back_to_the_previous(tmp_path):
    model, optimizer = trained()
    save_sharded(tmp_path, model, optimizer, {"epoch": 1})
    os.replace(tmp_path / LAST_DCP, tmp_path / f".{LAST_DCP}.old")
    assert find_sharded(tmp_path) == tmp_path / f".{LAST_DCP}.old"
    assert load_sharded(tmp_path, fsdp_script.make_model()) == {"epoch": 1}


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    path = save_sharded(tmp_path, nn.Linear(2, 2))
    atomic_save({"format": 99, "extra": {}}, path / TRAINER_FILE)
    with pytest.raises(ValueError, match="of format 99; this kiln reads format 1"):
        load_sharded(tmp_path, nn.Linear(2, 2))


def leave_mark(path: str) -> None:
    Path(path).write_text("code ran")


class Payload:
    """Unpickling it calls `leave_mark`: the stand-in for code in a hostile file."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return leave_mark, (str(self.mark),)


def test_metadata_that_would_run_code_is_refused(tmp_path):
    path = save_sharded(tmp_path, nn.Linear(2, 2))
    mark = tmp_path / "mark"
    (path / ".metadata").write_bytes(pickle.dumps(Payload(mark)))
    with pytest.raises(CheckpointError, match="Refused to load .*asks for .*leave_mark.*refused"):
        load_sharded(tmp_path, nn.Linear(2, 2))
    assert not mark.exists()


def test_values_that_would_run_code_are_refused(tmp_path):
    mark = tmp_path / "mark"
    net = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    path = save_sharded(tmp_path, net, optimizer)
    weights, moments = get_state_dict(net, optimizer)
    moments["param_groups"][0]["lr"] = Payload(mark)  # the same layout, one hostile value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP's notes on one process and on overwriting
        dcp.save({"model": weights, "optimizer": moments}, checkpoint_id=path)
    assert not mark.exists()
    with pytest.raises(CheckpointError, match="Refused to load .*Weights only load failed"):
        load_sharded(tmp_path, net, optimizer)
    assert not mark.exists()
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_a_checkpoint_of_another_architecture_is_named(tmp_path):
    save_sharded(tmp_path, nn.Sequential(nn.Linear(2, 3)))
    with pytest.raises(
        ValueError, match=r"do not fit Sequential.*0.weight: \(3, 2\) in the file, \(4, 2\)"
    ):
        load_sharded(tmp_path, nn.Sequential(nn.Linear(2, 4)))
    with pytest.raises(ValueError, match="missing from the file: 1.bias, 1.weight"):
        load_sharded(tmp_path, nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)))


def make_trainer() -> tuple[kiln.Trainer, kiln.Data]:
    kiln.seed_everything(0)
    inputs, targets = torch.randn(48, 8), torch.randn(48, 4)
    model = shard_model(fsdp_script.make_model())
    trainer = kiln.Trainer(model, loss="mse", device="cpu", progress=False)
    return trainer, kiln.Data((inputs, targets), batch_size=16, shuffle=True)


def test_a_sharded_trainer_resumed_from_its_checkpoint_equals_a_straight_run(tmp_path):
    with single_process_group():
        straight, data = make_trainer()
        straight.fit(data, epochs=4)
        expected = full_state(straight.model, straight.optimizer)

        first, data = make_trainer()
        first.fit(data, epochs=2)
        save_trainer_sharded(first, tmp_path)
        second, data = make_trainer()
        assert load_trainer_sharded(second, tmp_path)
        assert second.state.epoch == 2
        second.fit(data, epochs=2)
        assert_same(full_state(second.model, second.optimizer), expected)
    assert second.history.batch_losses == straight.history.batch_losses
    assert not load_trainer_sharded(second, tmp_path / "none")


@pytest.mark.slow
def test_two_ranks_save_and_load_on_two_on_one_and_unsharded(tmp_path):
    """Sharded over 2 ranks: equal to one process up to rounding; reloaded anywhere: bitwise."""
    weights, moments = launch(fsdp_script.train_and_save, str(tmp_path), nprocs=2)
    reference_weights, _ = fsdp_script.train_unsharded()
    for name, tensor in reference_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-6)

    extra, loaded, scattered = launch(
        fsdp_script.load_and_gather, str(tmp_path), weights, moments, nprocs=2
    )
    assert extra == {"ranks": 2}
    assert_same(loaded, (weights, moments))
    assert_same(scattered, (weights, moments))

    extra, loaded, _ = launch(
        fsdp_script.load_and_gather, str(tmp_path), weights, moments, nprocs=1
    )
    assert_same(loaded, (weights, moments))

    model = fsdp_script.make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    assert load_sharded(tmp_path, model, optimizer) == {"ranks": 2}
    assert_same((model.state_dict(), optimizer.state_dict()), (weights, moments))


@pytest.mark.slow
def test_two_ranks_resume_a_trainer_from_a_sharded_checkpoint_exactly(tmp_path):
    """2 ranks (DDP): 2 epochs, saved through DCP, loaded by new trainers, 2 more == 4 straight."""
    straight, resumed, straight_losses, resumed_losses = launch(
        fsdp_script.trainer_resumed_and_straight, str(tmp_path), nprocs=2
    )
    assert_same(resumed, straight)
    assert resumed_losses == straight_losses
