"""Per-rank shards: together the ranks' batches are one process's batches of the global size."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

import kiln
from kiln.distributed import DataShard, RankSampler, shard, shard_loader


def union_of_steps(parts: list[list[torch.Tensor]]) -> list[list[int]]:
    """Step k of every rank, concatenated in rank order then sorted (one global batch)."""
    return [sorted(torch.cat(step).tolist()) for step in zip(*parts, strict=True)]


@pytest.mark.parametrize(("total", "world"), [(40, 2), (41, 2), (30, 3), (7, 2)])
def test_training_shards_make_up_the_one_process_batches(total, world):
    data = kiln.Data(torch.arange(total), batch_size=4, shuffle=True, seed=3)
    data.set_epoch(2)
    parts = []
    for rank in range(world):
        shard_ = shard(data, rank, world, seed=0, even=True)
        shard_.set_epoch(2)
        parts.append(list(shard_))
    assert len({len(part) for part in parts}) == 1  # every rank takes as many steps
    used = total - total % world
    whole = kiln.Data(torch.arange(total)[:used], batch_size=4 * world)
    order = kiln.data.in_memory.permutation(total, 3, 2)[:used]
    expected = [sorted(order[i : i + 4 * world].tolist()) for i in range(0, used, 4 * world)]
    assert union_of_steps(parts) == expected
    assert len(whole) == len(expected)


def test_evaluation_shards_see_every_sample_once():
    data = kiln.Data(torch.arange(17), batch_size=4)
    seen = [x for rank in range(2) for batch in shard(data, rank, 2, 0, even=False) for x in batch]
    assert sorted(int(x) for x in seen) == list(range(17))


def test_a_shard_reads_the_options_of_its_data():
    data = kiln.Data(torch.arange(12), batch_size=2)
    part = DataShard(data, rank=0, world_size=2, even=True)
    data.batch_size = 3
    assert len(part) == 2  # 6 samples of rank 0, in batches of 3
    part.batch_size = 6
    assert data.batch_size == 6
    part.seed = 11
    assert data.seed == 11
    assert shard(part, 1, 2, 0, even=True).data is data  # a shard is re-cut from its data


def test_one_process_is_left_alone():
    data = kiln.Data(torch.arange(4))
    assert shard(data, 0, 1, seed=0, even=True) is data


def test_a_loader_gets_a_rank_sampler_with_its_other_arguments():
    dataset = TensorDataset(torch.arange(10))
    loader = DataLoader(dataset, batch_size=2, shuffle=True, drop_last=True)
    part = shard_loader(loader, rank=1, world_size=2, seed=5, even=True)
    assert isinstance(part.sampler, RankSampler)
    assert (part.batch_size, part.drop_last, part.sampler.shuffle) == (2, True, True)
    part.sampler.set_epoch(1)
    expected = kiln.data.in_memory.permutation(10, 5, 1)[1::2].tolist()
    assert [int(x) for (batch,) in part for x in batch] == expected[:4]  # drop_last: 2 batches


def test_a_sharded_or_iterable_loader_is_kept():
    dataset = TensorDataset(torch.arange(6))
    sampler = DistributedSampler(dataset, num_replicas=2, rank=0)
    loader = DataLoader(dataset, sampler=sampler)
    assert shard_loader(loader, 0, 2, seed=0, even=True) is loader


def test_a_custom_sampler_is_refused_with_the_fix():
    dataset = TensorDataset(torch.arange(6))
    loader = DataLoader(dataset, sampler=WeightedRandomSampler([1.0] * 6, 6))
    with pytest.raises(ValueError, match="custom WeightedRandomSampler.*DistributedSampler"):
        shard_loader(loader, 0, 2, seed=0, even=True)
    batches = DataLoader(dataset, batch_sampler=[[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="custom batch_sampler"):
        shard_loader(batches, 0, 2, seed=0, even=True)


def test_rank_sampler_without_shuffling_is_strided():
    assert list(RankSampler(7, 1, 3, shuffle=False, seed=0, even=True)) == [1, 4]
    assert len(RankSampler(7, 0, 3, shuffle=False, seed=0, even=False)) == 3
