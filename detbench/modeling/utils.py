"""Small tensor helpers shared by the modeling code."""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.layers import group_norm


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.cat(tensors, dim)``, but a single tensor is returned as it is (no copy)."""
    if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
        raise ValueError("cat needs a non-empty list or tuple of tensors")
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def group_norm_factory(cfg: CfgNode) -> Callable[[int], nn.GroupNorm]:
    """channels -> GroupNorm sized by MODEL.GROUP_NORM (NUM_GROUPS or DIM_PER_GP, EPSILON)."""
    gn = cfg.MODEL.GROUP_NORM
    return partial(group_norm, num_groups=gn.NUM_GROUPS, dim_per_group=gn.DIM_PER_GP, eps=gn.EPSILON)
