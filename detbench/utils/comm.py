"""Helpers for multi-process (torch.distributed) runs that also work in a single process.

Every function works without an initialised process group, where it behaves as
the only process of a group of one. Functions marked *collective* must be called
by every rank, in the same order, or the ranks wait for each other forever (or
until the process group's timeout).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when torch.distributed is usable and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the group (1 without torch.distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    """This process's rank (0 without torch.distributed)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0, the process that logs and writes files."""
    return get_rank() == 0


def _barrier_kwargs() -> dict:
    # NCCL's barrier needs to know this rank's GPU, or it guesses one and warns.
    if dist.get_backend() == "nccl":
        return {"device_ids": [torch.cuda.current_device()]}
    return {}


def synchronize() -> None:
    """Collective: wait until every rank reaches this point (no-op for one process)."""
    if get_world_size() > 1:
        dist.barrier(**_barrier_kwargs())


def all_gather(obj: Any) -> list[Any]:
    """Collective: ``obj`` of every rank, in rank order; ``obj`` may be any picklable object.

    With NCCL the objects travel through the current CUDA device, so
    ``torch.cuda.set_device`` must have been called. Returns ``[obj]`` for one process.
    """
    world_size = get_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def reduce_dict(values: dict[str, torch.Tensor], average: bool = True) -> dict[str, torch.Tensor]:
    """Collective: sum (or mean, ``average=True``) of each scalar tensor over the ranks.

    Every rank receives the same result (all-reduce), so a decision taken on it,
    such as stopping on a non-finite loss, is taken by all ranks together. Keys
    must be the same on every rank; the input is returned unchanged for one process.
    """
    world_size = get_world_size()
    if world_size == 1:
        return values
    names = sorted(values)  # dicts may have been filled in different orders on different ranks
    with torch.no_grad():
        stacked = torch.stack([values[k].reshape(()) for k in names])
        dist.all_reduce(stacked)
        if average:
            stacked /= world_size
    return dict(zip(names, stacked.unbind(0)))
