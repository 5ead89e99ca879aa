"""`kiln.distributed.launch`: starting ranks from Python, each rank's GPU, the one-rank group.

The checks of arguments run before any process starts and are fast; starting real ranks (two
gloo processes on the CPU) is slow.
"""

from __future__ import annotations

import sys
import tempfile
import types
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from kiln.distributed.launch import free_port, launch, single_process_group, visible_devices
from tests.distributed import launch_script


def test_each_rank_sees_only_its_own_gpu():
    assert visible_devices([0, 2]) == ["0", "2"]
    assert visible_devices((3,)) == ["3"]


def test_gpu_indices_follow_this_process_visible_devices():
    assert visible_devices([1, 0], parent_visible="4,5,6") == ["5", "4"]
    assert visible_devices([0], parent_visible=" 7 , 1") == ["7"]


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        ("0,1", r"a list of GPU indices, such as \[0, 1\]; received '0,1'"),
        ([0, 1.0], r"integer GPU indices.*received 1.0 in \[0, 1.0\]"),
        ([True], "integer GPU indices.*received True"),
    ],
)
def test_gpus_of_the_wrong_type_are_refused(gpus, message):
    with pytest.raises(TypeError, match=message):
        visible_devices(gpus)


@pytest.mark.parametrize(
    ("gpus", "visible", "message"),
    [
        ([], None, "`gpus` is empty"),
        ([1, 1], None, r"repeats a GPU \(\[1, 1\]\): each rank needs its own"),
        ([-1], None, "names GPU -1, which this process cannot see"),
        ([2], "0,1", r"names GPU 2.*CUDA_VISIBLE_DEVICES='0,1' shows 2"),
    ],
)
def test_gpus_that_cannot_work_are_refused(gpus, visible, message):
    with pytest.raises(ValueError, match=message):
        visible_devices(gpus, parent_visible=visible)


def test_launch_refuses_a_lambda_and_a_local_function_before_starting():
    with pytest.raises(TypeError, match="cannot start .*<lambda>.*Define it at the top level"):
        launch(lambda: 1, nprocs=2)

    def local() -> int:
        return 1

    with pytest.raises(TypeError, match="cannot start .*local.*a function defined inside"):
        launch(local, nprocs=2)
    with pytest.raises(TypeError, match="expects a function to run on each rank; received int"):
        launch(3)  # type: ignore[arg-type]


def test_launch_names_the_notebook_limitation(monkeypatch):
    notebook = types.ModuleType("__main__")  # a kernel's __main__ has no file
    monkeypatch.setitem(sys.modules, "__main__", notebook)

    def cell() -> int:
        return 1

    cell.__module__ = "__main__"
    with pytest.raises(TypeError, match="defined in a notebook.*Put the function in a .py file"):
        launch(cell)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"nprocs": 0}, ValueError, "`nprocs` must be at least 1; received 0"),
        ({"nprocs": "2"}, TypeError, "`nprocs` must be an int.*received '2'"),
        ({"nprocs": 3, "gpus": [0, 1]}, ValueError, r"`nprocs=3` but `gpus` lists 2 GPU\(s\)"),
        ({"max_restarts": -1}, ValueError, "`max_restarts` must be 0 or more; received -1"),
        ({"max_restarts": 1.5}, TypeError, "`max_restarts` must be an int; received 1.5"),
    ],
)
def test_launch_options_are_checked_before_starting(options, error, message):
    with pytest.raises(error, match=message):
        launch(launch_script.rank_report, 1, **options)


def test_a_one_rank_group_lives_for_the_with_block_only():
    with single_process_group():
        assert dist.get_world_size() == 1
        with pytest.raises(RuntimeError, match="initialised already"), single_process_group():
            pass
    assert not dist.is_initialized()


@pytest.mark.slow
def test_launch_runs_on_every_rank_and_returns_rank_0s_result():
    def launch_folders() -> set[Path]:
        temporary = Path(tempfile.gettempdir())
        return {*temporary.glob("torchelastic_*"), *temporary.glob("kiln-launch-*")}

    before = launch_folders()
    rank, world, total, threads = launch(launch_script.rank_report, 5, step=2, nprocs=2)
    assert launch_folders() <= before  # the launcher's log folders are not left behind
    assert (rank, world) == (0, 2)
    assert total == 5 + 7  # both ranks took part, with the keyword argument
    assert threads >= 1


@pytest.mark.slow
def test_a_failing_rank_raises_with_its_traceback():
    with pytest.raises(ChildFailedError, match="rank 1 broke on purpose"):
        launch(launch_script.break_rank_1, nprocs=2)


@pytest.mark.slow
def test_failed_ranks_are_restarted_up_to_max_restarts(tmp_path):
    marker = str(tmp_path / "failed-once")
    assert launch(launch_script.fail_once, marker, nprocs=2, max_restarts=1) == "restarted and done"


@pytest.mark.slow
def test_a_restarted_group_ignores_the_addresses_of_the_failed_attempt():
    # The store outlives attempts, as the elastic agent's does; without a prefix per attempt,
    # rank 0 of the restart would dial rank 1's dead address from attempt 0 and be refused.
    port = free_port()
    agent_store = dist.TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=30))
    for attempt in (0, 1):  # a rank that fails to connect or sum raises here
        torch.multiprocessing.spawn(launch_script.join_attempt, args=(port, attempt), nprocs=2)
    agent_store.set("done", "1")  # the store was up throughout
