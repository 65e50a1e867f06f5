"""Deformable convolutions, v1 (Dai et al. 2017) and modulated v2 (Zhu et al. 2018).

Both run on ``torchvision.ops.deform_conv2d`` (CPU and CUDA, forward and backward), so
detbench compiles no kernel of its own for them. The layout of the offsets and masks is
torchvision's, which is also maskrcnn-benchmark's:

- offsets ``[N, 2 * G * kh * kw, H_out, W_out]``: for deformable group ``g`` and kernel tap
  ``k`` (row-major over ``kh x kw``), channel ``2 * (g * kh * kw + k)`` moves the tap along y
  (rows) and the next channel along x (columns), in input pixels;
- masks ``[N, G * kh * kw, H_out, W_out]``: one factor per group and tap (v2 only).

A sample that falls between pixels is read by bilinear interpolation; pixels outside the
input read as zero. Deformable group ``g`` covers input channels ``g * C_in / G`` up to
``(g + 1) * C_in / G``.

:class:`DFConv2d` is maskrcnn-benchmark's layer of the same name: a plain convolution
(``offset``, zero-initialised) predicts the offsets (and mask logits, through a sigmoid)
from the input, then the deformable convolution (``conv``) samples with them. Its
parameter names (``offset.weight``, ``offset.bias``, ``conv.weight``) are maskrcnn-benchmark's,
so its DCN checkpoints load unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d

IntPair = int | tuple[int, int]


def _pair(value: IntPair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis (the same rule as ``nn.Conv2d``)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class DeformConv(nn.Module):
    """A deformable convolution whose offsets (and masks) are inputs: [N, C_in, H, W] -> [N, C_out, H', W'].

    ``forward(x, offset, mask=None)`` with ``offset`` [N, 2 * G * kh * kw, H', W'] and ``mask``
    [N, G * kh * kw, H', W'] (layout in the module docstring); without a mask it is v1, with one
    v2. ``groups`` splits the channels as in ``nn.Conv2d``; ``deformable_groups`` (G) splits the
    input channels into groups that share offsets. The weight is initialised uniformly in
    +-1/sqrt(C_in * kh * kw), as maskrcnn-benchmark's DeformConv; the bias (if any) to zero.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        *,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups {groups} must divide in_channels {in_channels} and out_channels {out_channels}")
        if deformable_groups < 1 or in_channels % deformable_groups:
            raise ValueError(f"deformable_groups {deformable_groups} must be >= 1 and divide in_channels {in_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups, self.deformable_groups = groups, deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        bound = 1.0 / math.sqrt(in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') for an input of ``height`` x ``width``."""
        return tuple(
            conv_output_size(s, k, st, p, d)
            for s, k, st, p, d in zip((height, width), self.kernel_size, self.stride, self.padding, self.dilation)
        )

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[0] == 0:  # no image / no RoI: the op wants a batch, the answer is known
            return x.new_zeros((0, self.out_channels, *self.output_size(*x.shape[-2:])))
        return deform_conv2d(
            x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
            dilation=self.dilation, mask=mask,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


class DFConv2d(nn.Module):
    """A deformable convolution that predicts its own offsets: [N, C_in, H, W] -> [N, C_out, H', W'].

    ``offset`` is an ``nn.Conv2d`` with the same kernel, stride, padding and dilation as the
    deformable ``conv`` (padding ``dilation * (k - 1) // 2``, so a 3x3 keeps the size at
    ``H / stride``). It outputs ``G * 2 * kh * kw`` channels of offsets (v1) or ``G * 3 * kh * kw``
    (``modulated``, v2): the first ``2 G kh kw`` are offsets, the last ``G kh kw`` mask logits,
    each mask being ``sigmoid(logit)``. The offset conv starts at zero (weight and bias), so a
    new layer is a plain convolution (v1) or a plain convolution times 0.5 = sigmoid(0) (v2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        modulated: bool = False,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        dilation: IntPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        kernel, dilation = _pair(kernel_size), _pair(dilation)
        padding = (dilation[0] * (kernel[0] - 1) // 2, dilation[1] * (kernel[1] - 1) // 2)
        self.modulated = modulated
        self.num_offsets = deformable_groups * 2 * kernel[0] * kernel[1]
        per_tap = 3 if modulated else 2
        self.offset = nn.Conv2d(
            in_channels, deformable_groups * per_tap * kernel[0] * kernel[1], kernel, stride=stride,
            padding=padding, dilation=dilation,
        )
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv(
            in_channels, out_channels, kernel, stride=stride, padding=padding, dilation=dilation,
            groups=groups, deformable_groups=deformable_groups, bias=bias,
        )

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The predicted offsets [N, 2 G kh kw, H', W'] and mask [N, G kh kw, H', W'] (None for v1)."""
        predicted = self.offset(x)
        if not self.modulated:
            return predicted, None
        return predicted[:, : self.num_offsets], predicted[:, self.num_offsets :].sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        return self.conv(x, offset, mask)
