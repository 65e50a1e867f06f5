"""Small helpers of the tools: folders, the saved config, seeding."""

from __future__ import annotations

import os
import random
import secrets

import numpy as np
import torch
from yacs.config import CfgNode

from . import comm


def mkdir(path: str | os.PathLike) -> None:
    """Create ``path`` and its parents; an existing folder is fine."""
    os.makedirs(path, exist_ok=True)


def save_config(cfg: CfgNode, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML to ``path``; ``load_config(path)`` gives the same config back."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(cfg.dump())
    os.replace(tmp, path)  # a reader never sees a half-written file


def set_seed(seed: int, rank: int = 0) -> int:
    """Seed Python's ``random``, NumPy and torch (all devices) with ``seed + rank``; return it.

    The rank offset gives each process its own random stream (e.g. its own
    flips). ``seed < 0`` draws a base seed at random; in a distributed run rank
    0's draw is shared with every rank (collective: call it on all ranks), so
    the seed logged by rank 0 reproduces the run when set as SEED.
    """
    if seed < 0:
        # Below 2**31 so that seed + rank stays a valid NumPy seed (< 2**32).
        seed = comm.all_gather(secrets.randbelow(2**31))[0]
    used = seed + rank
    random.seed(used)
    np.random.seed(used)
    torch.manual_seed(used)  # also seeds every CUDA device
    return used
