"""GroupedBatchSampler: batches whose images all belong to one group (e.g. aspect ratio)."""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Sequence

from torch.utils.data import Sampler

from .distributed import DistributedSampler


class GroupedBatchSampler(Sampler[list[int]]):
    """Batch the indices of ``sampler`` so that every batch holds one group id only.

    maskrcnn-benchmark's order: each group's indices, in the sampler's order, are cut into batches
    of ``batch_size`` (the last one of a group may be smaller; ``drop_uneven`` drops it), and the
    batches come out in the order of their first index in the sampler. So the sampler's order is
    kept within a batch and across batches, whatever the groups. Grouping portrait with portrait
    and landscape with landscape images keeps the padding of a batch small.

    Over a :class:`DistributedSampler` of W ranks, ``batch_size`` is the per-rank batch:
    the sampler's shared order (:meth:`DistributedSampler.global_order`) is grouped into
    global batches of ``W * batch_size``, exactly as one process with that batch size
    would, and rank r yields part r of each (positions ``r * batch_size ...``). So W
    processes train on the same global batches as one, every global batch is one group,
    and all ranks have the same number of batches per epoch. An incomplete global batch
    of n images is extended by repeating its own images up to ``W * ceil(n / W)``, so that
    every rank gets ``ceil(n / W)`` images (the sampler's own padding is not used).
    """

    def __init__(
        self, sampler: Iterable[int], group_ids: Sequence[int], batch_size: int, drop_uneven: bool = False
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler, self.group_ids = sampler, list(group_ids)
        self.batch_size, self.drop_uneven = batch_size, drop_uneven

    def _split(self) -> tuple[Iterable[int], int, int]:
        """(indices to group, number of ranks sharing each batch, this rank)."""
        if isinstance(self.sampler, DistributedSampler):
            return self.sampler.global_order(), self.sampler.num_replicas, self.sampler.rank
        return self.sampler, 1, 0

    def _global_batches(self, order: Iterable[int], size: int) -> list[list[int]]:
        batches: list[list[int]] = []  # in the order of their first index: batches[i] began before batches[i + 1]
        open_batch: dict[int, list[int]] = {}  # group -> its batch being filled
        for index in order:
            group = self.group_ids[index]
            batch = open_batch.get(group)
            if batch is None or len(batch) == size:
                batch = open_batch[group] = []
                batches.append(batch)
            batch.append(index)
        if self.drop_uneven:
            return [batch for batch in batches if len(batch) == size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        order, world, rank = self._split()
        for batch in self._global_batches(order, self.batch_size * world):
            per_rank = math.ceil(len(batch) / world)
            # Only an incomplete batch is extended (cyclically, so n < W still works).
            batch = (batch * world)[: per_rank * world]
            yield batch[rank * per_rank : (rank + 1) * per_rank]

    def __len__(self) -> int:
        order, world, _ = self._split()
        size = self.batch_size * world
        counts: dict[int, int] = {}
        for index in order:
            counts[self.group_ids[index]] = counts.get(self.group_ids[index], 0) + 1
        if self.drop_uneven:
            return sum(c // size for c in counts.values())
        return sum(-(-c // size) for c in counts.values())  # ceil division
