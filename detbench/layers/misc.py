"""Convolution and resampling layers that also take empty batches.

Detection heads regularly see zero RoIs in an image; every layer here returns a
correctly shaped empty output for an empty input and still gives every parameter a
(zero) gradient, which DistributedDataParallel needs. Current PyTorch does this
natively for ``nn.ConvTranspose2d`` and ``F.interpolate``, so those are exported
as they are (tests/layers/test_misc.py guards the behaviour); :class:`Conv2d` adds
an optional normalisation and activation to ``nn.Conv2d``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ConvTranspose2d = nn.ConvTranspose2d
interpolate = F.interpolate


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional ``norm`` module and ``activation`` callable.

    Input ``[N, C_in, H, W]`` -> output ``[N, C_out, H', W']``; N may be 0.
    """

    def __init__(
        self,
        *args,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
