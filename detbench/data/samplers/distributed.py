"""DistributedSampler: each process gets its share of the dataset indices."""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


class DistributedSampler(Sampler[int]):
    """Indices ``0..size-1`` split across ``num_replicas`` processes, rank r taking positions
    r, r + W, r + 2W, ... of the (optionally shuffled) order.

    * ``shuffle``: the order is a permutation drawn from a generator seeded with
      ``seed + epoch``, so every rank draws the same permutation and an epoch can be
      replayed exactly (call :meth:`set_epoch` before each epoch).
    * ``pad=True`` (training): the order is extended by repeating its first indices up to a
      multiple of W, so every rank gets ``ceil(size / W)`` indices and a few images are seen
      twice per epoch. ``pad=False`` (testing): no repeats, so ranks may differ by one index
      and every image is visited exactly once across all ranks.

    Batched with ``BatchSampler(sampler, b)``, rank r's k-th batch holds positions
    ``kWb + r, kWb + r + W, ...``: the ranks' k-th batches together are the k-th batch of
    ``W * b`` of a single process (except where padding repeats images at the end of an
    epoch). :class:`GroupedBatchSampler` splits global batches itself (see there).

    Without ``num_replicas``/``rank`` they come from torch.distributed (1 and 0 when it is
    not initialised).
    """

    def __init__(
        self,
        size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        pad: bool = True,
    ) -> None:
        initialised = dist.is_available() and dist.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if initialised else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        self.size, self.shuffle, self.seed, self.pad = int(size), shuffle, seed, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> list[int]:
        """The order of this epoch that all ranks share, before padding and splitting."""
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        if self.pad and self.size > 0:
            total = len(self) * self.num_replicas
            # Repeat the whole order as often as needed (more than once only when size < W).
            order = (order * math.ceil(total / self.size))[:total]
        return iter(order[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.num_replicas)
        # Positions rank, rank + W, ... below size.
        return len(range(self.rank, self.size, self.num_replicas))
