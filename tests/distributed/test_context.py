"""The process group from the environment, the helpers in one process, and their errors."""

from __future__ import annotations

import pytest
import torch

import kiln
from kiln.distributed import (
    Replicas,
    StepForward,
    all_gather,
    barrier,
    is_main_process,
    rank_zero_only,
    setup,
)
from kiln.distributed.context import DistributedContext
from kiln.loop.step_methods import StepOutput
from kiln.loop.tracking import PassTracker


def test_one_process_is_rank_zero_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = setup("cpu")
    assert (context.rank, context.world_size, context.enabled) == (0, 1, False)
    assert is_main_process()
    assert rank_zero_only(lambda: "written")() == "written"
    barrier()
    values = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert torch.equal(all_gather(values), values)


def test_bad_environment_and_timeout_are_explained(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' must be an integer.*torchrun"):
        setup("cpu")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="`timeout` must be a positive number.*received -1"):
        setup("cpu", timeout=-1)
    monkeypatch.setenv("KILN_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="KILN_DIST_TIMEOUT='soon' must be a number"):
        setup("cpu")


def test_an_unknown_strategy_is_refused():
    context = DistributedContext(0, 1, 0, torch.device("cpu"), None)
    with pytest.raises(
        ValueError, match=r"`strategy` must be one of \['ddp', 'fsdp'\]; received 'dp'"
    ):
        Replicas(context, "dp")
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu", strategy="dp")


def test_other_ranks_leave_out_the_callbacks_that_only_write():
    context = DistributedContext(1, 2, 1, torch.device("cpu"), "gloo")
    callbacks = [kiln.callbacks.ProgressBar(), kiln.callbacks.EarlyStopping()]
    kept = Replicas(context).active(callbacks)
    assert kept == [callbacks[1]]
    main = DistributedContext(0, 2, 0, torch.device("cpu"), "gloo")
    assert Replicas(main).active(callbacks) == callbacks


def test_step_forward_runs_the_step_with_the_model_inside():
    model = torch.nn.Linear(2, 1)
    forward = StepForward(model)
    assert list(forward.parameters()) == list(model.parameters())
    assert forward(lambda a, b: a * b, 3, 4) == 12


class TwoSameRanks:
    """Collectives of two ranks that saw exactly the same: sums double, lists repeat."""

    @staticmethod
    def all_reduce(tensor):
        return tensor * 2

    @staticmethod
    def all_gather(tensor):
        return torch.cat([tensor, tensor])

    @staticmethod
    def all_gather_objects(value):
        return [value, value]


def test_tracker_sync_sums_losses_logs_and_metrics_over_the_ranks():
    metric = kiln.metrics.Accuracy()
    tracker = PassTracker([metric])
    output = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    tracker.update(StepOutput(torch.tensor(1.0), 2, output, torch.tensor([0, 0]), {"score": 3}))
    tracker.update(StepOutput(torch.tensor(4.0), 1, output[:1], torch.tensor([0]), {"score": 6}))
    alone = PassTracker([kiln.metrics.Accuracy()])
    alone.load_state_dict(tracker.state_dict(), torch.device("cpu"))
    tracker.sync(TwoSameRanks(), torch.device("cpu"))
    assert tracker.compute() == pytest.approx(alone.compute())  # the same means, twice the data
    assert tracker.samples == 6
    assert metric.state_dict()["count"] == 6
    assert tracker.batch_losses() == [1.0, 4.0]


def test_step_checkpoint_by_time_is_refused_under_torchrun(monkeypatch, tmp_path):
    monkeypatch.setattr(kiln.callbacks.step_checkpoint, "world_size", lambda: 2)
    saver = kiln.callbacks.StepCheckpoint(every_seconds=60)
    trainer = kiln.Trainer(
        torch.nn.Linear(2, 1), loss="mse", device="cpu", dir=tmp_path, callbacks=[saver]
    )
    with pytest.raises(ValueError, match="every_seconds=...\\) cannot run under torchrun"):
        trainer.fit((torch.randn(4, 2), torch.randn(4, 1)), epochs=1)


def test_a_mid_epoch_checkpoint_of_two_ranks_does_not_resume_on_one():
    trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu", progress=False)
    state = trainer.state_dict()
    state["position"] = {"batches": 1}
    state["ranks"] = [{"rng": state["rng"], "position": None}] * 2
    with pytest.raises(ValueError, match="saved inside an epoch by 2 process.*this run has 1"):
        trainer.load_state_dict(state)


def test_references_to_the_group_are_released_before_it_is_destroyed_at_exit(monkeypatch):
    # A group destroyed at interpreter shutdown, still held by a DDP reducer, can abort the
    # process; kiln's exit handler drops those references first, then collects, then destroys.
    from kiln.distributed import context as context_module

    calls: list[str] = []
    monkeypatch.setattr(context_module, "_RELEASE_AT_EXIT", [])
    context_module.release_at_exit(lambda: calls.append("first registered"))
    context_module.release_at_exit(lambda: calls.append("last registered"))
    monkeypatch.setattr(context_module.gc, "collect", lambda: calls.append("collect"))
    context_module._destroy()
    assert calls == ["last registered", "first registered", "collect"]
