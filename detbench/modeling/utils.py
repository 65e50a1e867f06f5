"""Small tensor helpers shared by the modeling code."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.cat(tensors, dim)``, but a single tensor is returned as it is (no copy)."""
    if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
        raise ValueError("cat needs a non-empty list or tuple of tensors")
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)
