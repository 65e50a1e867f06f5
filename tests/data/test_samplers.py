"""Samplers: distributed split, aspect-ratio grouping, iteration-based resume."""

from __future__ import annotations

import pytest
from torch.utils.data import BatchSampler, SequentialSampler

from detbench.data.samplers import DistributedSampler, GroupedBatchSampler, IterationBasedBatchSampler


@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_split_padded(shuffle):
    size, world = 10, 4
    parts = [list(DistributedSampler(size, world, r, shuffle=shuffle, seed=3)) for r in range(world)]
    assert all(len(p) == 3 for p in parts)  # ceil(10 / 4)
    flat = [i for p in parts for i in p]
    assert set(flat) == set(range(size)) and len(flat) == 12  # 2 indices repeated as padding
    if not shuffle:
        assert parts[0] == [0, 4, 8] and parts[1] == [1, 5, 9] and parts[2] == [2, 6, 0]


def test_distributed_split_without_padding_visits_each_once():
    parts = [list(DistributedSampler(10, 4, r, shuffle=False, pad=False)) for r in range(4)]
    assert [len(p) for p in parts] == [3, 3, 2, 2]
    assert sorted(i for p in parts for i in p) == list(range(10))
    assert [len(DistributedSampler(10, 4, r, shuffle=False, pad=False)) for r in range(4)] == [3, 3, 2, 2]


def test_distributed_shuffle_depends_on_epoch_only():
    a, b = DistributedSampler(50, 2, 0, seed=1), DistributedSampler(50, 2, 0, seed=1)
    first = list(a)
    assert list(b) == first  # same seed and epoch: same order
    a.set_epoch(1)
    assert list(a) != first
    ranks = [DistributedSampler(50, 2, r, seed=1) for r in range(2)]
    for s in ranks:
        s.set_epoch(1)
    assert sorted(i for s in ranks for i in s) == list(range(50))  # one permutation for all ranks


def test_distributed_rank_check():
    with pytest.raises(ValueError, match="rank 2"):
        DistributedSampler(5, 2, 2)


def test_grouped_batches_hold_one_group():
    groups = [0, 1, 0, 0, 1, 1, 1, 0, 0]
    sampler = GroupedBatchSampler(SequentialSampler(range(9)), groups, batch_size=2)
    batches = list(sampler)
    # By hand (maskrcnn-benchmark's order): group 0 is [0, 2], [3, 7], [8], group 1 [1, 4], [5, 6];
    # ordered by their first index: 0, 1, 3, 5, 8.
    assert batches == [[0, 2], [1, 4], [3, 7], [5, 6], [8]]
    assert len(sampler) == 5
    dropped = GroupedBatchSampler(SequentialSampler(range(9)), groups, batch_size=2, drop_uneven=True)
    assert list(dropped) == [[0, 2], [1, 4], [3, 7], [5, 6]] and len(dropped) == 4


def _maskrcnn_benchmark_batches(sampled: list[int], groups: list[int], batch_size: int, drop_uneven: bool):
    """maskrcnn-benchmark's GroupedBatchSampler._prepare_batches, restated with plain lists: split
    each group's indices (in sampled order) into chunks, then sort chunks by the sampled position
    of their first element."""
    position = {index: p for p, index in enumerate(sampled)}
    chunks = []
    for group in sorted(set(groups[i] for i in sampled)):
        members = [i for i in sampled if groups[i] == group]
        chunks += [members[k:k + batch_size] for k in range(0, len(members), batch_size)]
    chunks.sort(key=lambda chunk: position[chunk[0]])
    return [c for c in chunks if len(c) == batch_size] if drop_uneven else chunks


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("drop_uneven", [False, True])
def test_grouped_order_is_maskrcnn_benchmarks(seed, drop_uneven):
    import random

    rng = random.Random(seed)
    groups = [rng.randrange(3) for _ in range(40)]
    sampler = DistributedSampler(40, 1, 0, shuffle=True, seed=seed)
    got = list(GroupedBatchSampler(sampler, groups, 3, drop_uneven))
    assert got == _maskrcnn_benchmark_batches(list(sampler), groups, 3, drop_uneven)


def _run(start_iter: int, num_iterations: int = 17, grouped: bool = True) -> list[list[int]]:
    sampler = DistributedSampler(11, 1, 0, shuffle=True, seed=7)
    groups = [i % 3 == 0 for i in range(11)]
    batches = (
        GroupedBatchSampler(sampler, groups, 2) if grouped else BatchSampler(sampler, 2, drop_last=False)
    )
    return list(IterationBasedBatchSampler(batches, num_iterations, start_iter))


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("start_iter", [0, 1, 6, 13, 17])
def test_resume_gives_the_batches_of_an_uninterrupted_run(start_iter, grouped):
    full = _run(0, grouped=grouped)
    assert len(full) == 17
    assert _run(start_iter, grouped=grouped) == full[start_iter:]


def test_iteration_sampler_sets_epochs_and_cycles():
    sampler = DistributedSampler(4, 1, 0, shuffle=True, seed=0)
    it = IterationBasedBatchSampler(BatchSampler(sampler, 4, drop_last=False), 3)
    batches = list(it)
    assert len(it) == 3 and len(batches) == 3 and sampler.epoch == 2
    assert all(sorted(b) == [0, 1, 2, 3] for b in batches)
    assert len({tuple(b) for b in batches}) > 1  # epochs are shuffled differently


def test_iteration_sampler_errors():
    with pytest.raises(ValueError, match="start_iter"):
        IterationBasedBatchSampler(BatchSampler(range(3), 1, False), 5, 6)
    with pytest.raises(RuntimeError, match="no batch"):
        list(IterationBasedBatchSampler(BatchSampler(range(0), 1, False), 5))
