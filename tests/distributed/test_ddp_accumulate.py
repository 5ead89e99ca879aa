"""Two gloo ranks: gradient accumulation reduces once a step; a skipped batch is skipped on all.

Each test forks two ranks running `accumulate_script.run` (40 samples, 3 batches an epoch: with
`accumulate=2` a group of two batches and a short last group of one) and compares them with the
same script in this process at the global batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.distributed import accumulate_script
from tests.distributed.group import results, run_forked
from tests.distributed.test_ddp import assert_like_one_process


def two_ranks(options: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """What each of two forked ranks ended with (batch 8 each)."""
    out.mkdir()
    run_forked({**options, "out": str(out), "batch_size": 8}, main=accumulate_script.run)
    return results(out)


def one_process(options: dict[str, Any], out: Path) -> dict[str, Any]:
    """The same run in this process, at the global batch of 16."""
    out.mkdir()
    accumulate_script.run({**options, "out": str(out), "batch_size": 16})
    return results(out)[0]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_accumulating_on_two_ranks_equals_one_process(tmp_path: Path, strategy: str) -> None:
    """`accumulate=2` with a short last group (3 batches an epoch): 2 x 8 == 1 x 16."""
    options = {"accumulate": 2, "epochs": 3, "strategy": strategy}
    ranks = two_ranks(options, tmp_path / "ranks")
    single = one_process({**options, "strategy": "ddp"}, tmp_path / "single")
    assert_like_one_process(ranks, single)
    assert ranks[0]["step"] == single["step"] == 3 * 2  # two groups an epoch


@pytest.mark.slow
def test_gradients_are_reduced_once_per_optimizer_step(tmp_path: Path) -> None:
    """DDP's comm hook runs once per step, not once per batch (the model is one bucket)."""
    ranks = two_ranks({"accumulate": 2, "epochs": 2}, tmp_path / "accumulate")
    every_batch = two_ranks({"accumulate": 1, "epochs": 2}, tmp_path / "every_batch")
    for rank in ranks:
        assert rank["step"] == 2 * 2  # 3 batches an epoch: groups of 2 and 1
        assert rank["reductions"] == rank["step"]
    for rank in every_batch:  # the hook counts every reduction: here one a batch
        assert rank["reductions"] == rank["step"] == 2 * 3


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_loss_not_finite_on_one_rank_skips_the_batch_on_every_rank(
    tmp_path: Path, accumulate: int
) -> None:
    """NaN on rank 1 only: both ranks skip the batch and stay equal, as one process skipping it.

    With `accumulate=2` (groups of batches 0-1 and 2): batch 1 ends a group, so its first
    batch's gradients, kept on each rank, are averaged before the step; after a skipped batch
    1 or 2 DDP, armed by its forward, reduces the next batch, kept or not (no harm: averaging
    twice changes nothing); a skipped batch 0 leaves its group to batch 1.
    """
    options = {
        "accumulate": accumulate,
        "epochs": 3,
        "nonfinite": "skip",
        "nan_at": [[0, 1], [0, 2], [1, 1], [2, 0]],
    }
    first, second = two_ranks({**options, "nan_rank": 1}, tmp_path / "ranks")
    single = one_process(options, tmp_path / "single")
    assert first["skipped_batches"] == second["skipped_batches"] == single["skipped_batches"] == 4
    assert first["step"] == second["step"] == single["step"]
    skipped = [row["skipped_batches"] for row in first["history"]]
    assert skipped == [row["skipped_batches"] for row in second["history"]] == [2.0, 1.0, 1.0]
    assert first["warnings"] == second["warnings"] == single["warnings"]  # one an epoch
    for key, value in first["weights"].items():
        assert torch.equal(value, second["weights"][key]), key
        torch.testing.assert_close(value, single["weights"][key], rtol=1e-5, atol=1e-6)
