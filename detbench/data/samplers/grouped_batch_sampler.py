"""GroupedBatchSampler: batches whose images all belong to one group (e.g. aspect ratio)."""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

from torch.utils.data import Sampler


class GroupedBatchSampler(Sampler[list[int]]):
    """Batch the indices of ``sampler`` so that every batch holds one group id only.

    Indices are taken in the sampler's order and put in their group's buffer; a buffer is
    emitted as a batch as soon as it holds ``batch_size`` indices, so batches come out in the
    order in which they fill. At the end of the sampler, the incomplete buffers are emitted
    (groups in the order in which they first appeared) unless ``drop_uneven``. Grouping portrait with portrait
    and landscape with landscape images keeps the padding of a batch small.
    """

    def __init__(
        self, sampler: Iterable[int], group_ids: Sequence[int], batch_size: int, drop_uneven: bool = False
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler, self.group_ids = sampler, list(group_ids)
        self.batch_size, self.drop_uneven = batch_size, drop_uneven

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for index in self.sampler:
            buffer = buffers.setdefault(self.group_ids[index], [])
            buffer.append(index)
            if len(buffer) == self.batch_size:
                yield buffer
                buffers[self.group_ids[index]] = []
        if not self.drop_uneven:
            # A dict keeps its keys' insertion order: groups in the order they first appeared.
            yield from (buffer for buffer in buffers.values() if buffer)

    def __len__(self) -> int:
        counts: dict[int, int] = {}
        for index in self.sampler:
            counts[self.group_ids[index]] = counts.get(self.group_ids[index], 0) + 1
        if self.drop_uneven:
            return sum(c // self.batch_size for c in counts.values())
        return sum(-(-c // self.batch_size) for c in counts.values())  # ceil division
