"""IterationBasedBatchSampler: a fixed number of batches, cycling through epochs, resumable."""

from __future__ import annotations

from typing import Iterator

from torch.utils.data import Sampler


class IterationBasedBatchSampler(Sampler[list[int]]):
    """Yield the batches of iterations ``start_iter .. num_iterations - 1`` of ``batch_sampler``
    run epoch after epoch.

    Before each epoch e the inner sampler (``batch_sampler.sampler``) gets ``set_epoch(e)``
    when it has it. To resume, the epochs before ``start_iter`` are replayed at the index
    level (no data is loaded) and their batches skipped, so with a deterministic per-epoch
    sampler (such as :class:`DistributedSampler`) the batches after a resume are exactly
    those an uninterrupted run would have produced.
    """

    def __init__(self, batch_sampler: Sampler[list[int]], num_iterations: int, start_iter: int = 0) -> None:
        if not 0 <= start_iter <= num_iterations:
            raise ValueError(f"start_iter must be in [0, num_iterations={num_iterations}], got {start_iter}")
        self.batch_sampler, self.num_iterations, self.start_iter = batch_sampler, num_iterations, start_iter

    def _set_epoch(self, epoch: int) -> None:
        sampler = getattr(self.batch_sampler, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        iteration, epoch = 0, 0
        while iteration < self.num_iterations:
            self._set_epoch(epoch)
            produced = False
            for batch in self.batch_sampler:
                produced = True
                if iteration >= self.start_iter:
                    yield batch
                iteration += 1
                if iteration >= self.num_iterations:
                    return
            if not produced:
                raise RuntimeError("IterationBasedBatchSampler: the batch sampler yielded no batch in an epoch")
            epoch += 1

    def __len__(self) -> int:
        return self.num_iterations - self.start_iter
