"""Where the random draws of the data pipeline come from.

A training sample's flips, scale choice and any other augmentation are drawn from a
``torch.Generator`` seeded with a function of ``(seed, iteration, dataset index)`` only
(:func:`sample_generator`), never from the state of the process that loads it. So the
draws of a sample do not depend on ``DATALOADER.NUM_WORKERS``, on which worker loads it,
or on whether the run was resumed: a run killed at any iteration and restarted replays
exactly the draws of the uninterrupted run.

The generator of the sample being loaded is made current with :func:`use_generator`
(the loader does this around each sample, see ``detbench.data.build``); a transform
takes it from :func:`current_generator`. Outside such a block (e.g. a transform called
by hand) ``current_generator()`` is None and torch's default generator is used.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import numpy as np
import torch

_state = threading.local()


def sample_seed(seed: int, iteration: int, index: int) -> int:
    """A 63-bit seed mixed from ``(seed, iteration, index)`` (NumPy's SeedSequence hash).

    Negative inputs are allowed (e.g. SEED -1); distinct triples give unrelated seeds.
    """
    words = [int(v) % 2**64 for v in (seed, iteration, index)]
    low, high = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return (int(high) << 32 | int(low)) & (2**63 - 1)


def sample_generator(seed: int, iteration: int, index: int) -> torch.Generator:
    """A CPU generator seeded with :func:`sample_seed`."""
    return torch.Generator().manual_seed(sample_seed(seed, iteration, index))


def current_generator() -> torch.Generator | None:
    """The generator made current by the innermost :func:`use_generator`, else None."""
    return getattr(_state, "generator", None)


@contextlib.contextmanager
def use_generator(generator: torch.Generator | None) -> Iterator[torch.Generator | None]:
    """Make ``generator`` current for the block (per thread; blocks nest)."""
    previous = current_generator()
    _state.generator = generator
    try:
        yield generator
    finally:
        _state.generator = previous
