"""Feature Pyramid Network (Lin et al., 2017) on top of a multi-stage body.

Numbers match ``torchvision.ops.FeaturePyramidNetwork`` with ``LastLevelMaxPool`` (the
top-down pathway upsamples with nearest neighbour to the lateral's exact size, so odd
sizes work); parameter names follow maskrcnn-benchmark (``fpn_inner1`` .. ``fpn_innerK``
for the lateral 1x1 convs, ``fpn_layer1`` .. ``fpn_layerK`` for the 3x3 output convs,
1 = highest resolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import NormFactory


def fpn_conv(
    in_channels: int, out_channels: int, kernel_size: int, norm: NormFactory | None = None, use_relu: bool = False
) -> nn.Module:
    """Conv (kaiming_uniform a=1, zero bias; no bias before a norm), then the optional norm and ReLU.

    A bare ``nn.Conv2d`` when there is neither norm nor ReLU, else ``nn.Sequential`` with the conv
    at ``.0`` and the norm at ``.1``: maskrcnn-benchmark's parameter names in both cases.
    """
    # (k - 1) // 2 padding keeps H and W for the odd kernel sizes used (1 and 3).
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=norm is None)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    extra = ([norm(out_channels)] if norm is not None else []) + ([nn.ReLU(inplace=True)] if use_relu else [])
    return nn.Sequential(conv, *extra) if extra else conv


class LastLevelMaxPool(nn.Module):
    """P6 from P5 by 1x1 max pooling with stride 2: [N, C, H, W] -> [N, C, ceil(H/2), ceil(W/2)].

    Top blocks take ``(p, c)``: the FPN's last output and the body's last input (unused here).
    """

    num_levels = 1

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> list[torch.Tensor]:
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """RetinaNet's P6 and P7: a 3x3 stride-2 conv on C5 (``use_c5``) or on P5 gives P6, and
    another after a ReLU gives P7. Each halves H and W (rounding up).

    ``in_channels`` are C5's channels with ``use_c5``, else the FPN's. Convs are initialised
    kaiming_uniform (a=1) with zero bias; names p6, p7 as in maskrcnn-benchmark and torchvision.
    """

    num_levels = 2

    def __init__(self, in_channels: int, out_channels: int, use_c5: bool = True) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self.use_c5 = use_c5

    def forward(self, p: torch.Tensor, c: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``p``: P5 [N, C, H, W]; ``c``: C5 (needed with ``use_c5``) -> [P6, P7]."""
        if self.use_c5 and c is None:
            raise ValueError("LastLevelP6P7(use_c5=True) needs the body's last feature map C5")
        p6 = self.p6(c if self.use_c5 else p)
        return [p6, self.p7(F.relu(p6))]


class FPN(nn.Module):
    """Lateral 1x1 convs, a top-down pathway and 3x3 output convs, plus optional extra top levels.

    ``forward(features)`` takes the body's outputs [N, C_i, H_i, W_i], highest resolution first,
    with C_i = ``in_channels_list[i]``, and returns ``len(features) + top_blocks.num_levels`` maps
    with ``out_channels`` channels each, in the same order (P2 .. P5, then P6 for the max pool).
    """

    def __init__(
        self,
        in_channels_list: list[int] | tuple[int, ...],
        out_channels: int,
        *,
        norm: NormFactory | None = None,
        use_relu: bool = False,
        top_blocks: nn.Module | None = None,
        first_level: int = 1,
    ) -> None:
        super().__init__()
        if not in_channels_list or min(in_channels_list) <= 0:
            raise ValueError(f"FPN needs positive input channel counts, got {list(in_channels_list)}")
        self.in_channels_list = tuple(in_channels_list)
        self.out_channels = out_channels
        # Module numbers start at first_level: RetinaNet's FPN on C3..C5 has fpn_inner2..4 (maskrcnn-benchmark).
        self.first_level = first_level
        for level, in_channels in enumerate(in_channels_list, start=first_level):
            self.add_module(f"fpn_inner{level}", fpn_conv(in_channels, out_channels, 1, norm, use_relu))
            self.add_module(f"fpn_layer{level}", fpn_conv(out_channels, out_channels, 3, norm, use_relu))
        self.top_blocks = top_blocks

    def output_strides(self, in_strides: tuple[int, ...]) -> tuple[int, ...]:
        """Strides of the outputs given those of the inputs; each extra top level doubles the last."""
        extra = getattr(self.top_blocks, "num_levels", 0)  # 0 without top blocks
        return tuple(in_strides) + tuple(in_strides[-1] * 2**k for k in range(1, extra + 1))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.in_channels_list):
            raise ValueError(f"FPN built for {len(self.in_channels_list)} inputs, got {len(features)}")
        first, last = self.first_level, self.first_level + len(features) - 1
        top_down = getattr(self, f"fpn_inner{last}")(features[-1])
        results = [getattr(self, f"fpn_layer{last}")(top_down)]
        for level in range(last - 1, first - 1, -1):
            inner = getattr(self, f"fpn_inner{level}")
            lateral = inner(features[level - first])
            # Upsample to the lateral's size rather than by 2: an odd input side halves to ceil(side / 2).
            upsampled = F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            # A bare conv's output can take the sum in place (its backward needs its input, not its
            # output); after a ReLU it cannot, the ReLU's backward reads it.
            top_down = lateral.add_(upsampled) if isinstance(inner, nn.Conv2d) else lateral + upsampled
            results.insert(0, getattr(self, f"fpn_layer{level}")(top_down))
        if self.top_blocks is not None:
            results.extend(self.top_blocks(results[-1], features[-1]))
        return results
