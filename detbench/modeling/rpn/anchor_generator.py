"""AnchorGenerator: the reference boxes the RPN scores and regresses, per feature level."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.structures import BoxList, ImageList


def generate_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """[len(aspect_ratios) * len(sizes), 4] anchors centred on (0, 0), float32.

    Aspect ratio r = height / width: an anchor of size s has width s / sqrt(r) and height
    s * sqrt(r) (area s^2). Rows are ratio-major (all sizes of the first ratio, then the next),
    and the corners (-w/2, -h/2, w/2, h/2) are rounded to integers: torchvision's numbers.
    """
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)
    # torch.round rounds halves to even (e.g. 22.5 -> 22), like torchvision.
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class AnchorGenerator(nn.Module):
    """Anchors for each feature level, in input-image pixels (xyxy, width = x2 - x1).

    With one stride (C4/C5 backbones) every size in ``sizes`` is used on the single level;
    with several strides (FPN) level i uses ``sizes[i]`` only; ``per_level_sizes`` gives each
    level its own tuple of sizes instead (RetinaNet's octave scales). Each location (y, x) of a level
    with stride s holds the cell anchors shifted by (x s, y s); anchors are ordered
    location-major (row by row, then per location the cell anchors), the layout of the RPN
    head's outputs once permuted to [N, H, W, A].

    ``straddle_thresh``: an anchor is "visible" when it reaches at most this many pixels
    outside the image (x1 >= -t, y1 >= -t, x2 <= W + t, y2 <= H + t); a negative value makes
    every anchor visible. The RPN loss ignores invisible anchors.

    ``strides_from_image``: the stride of a level is the padded batch size // the level's
    grid size on each axis (torchvision's rule, e.g. 800 // 13 = 61 on P6 of an 800-row
    batch) instead of ``anchor_strides``; the two agree when the size divides by the stride.
    """

    def __init__(
        self,
        sizes: Sequence[float] = (128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        anchor_strides: Sequence[int] = (16,),
        straddle_thresh: float = 0,
        cache_size: int = 64,
        *,
        per_level_sizes: Sequence[Sequence[float]] | None = None,
        strides_from_image: bool = False,
    ) -> None:
        super().__init__()
        if per_level_sizes is not None:  # several sizes per level (RetinaNet's octave scales)
            if len(per_level_sizes) != len(anchor_strides):
                raise ValueError(f"AnchorGenerator: {len(per_level_sizes)} levels of sizes for "
                                 f"{len(anchor_strides)} strides")
            level_sizes = [tuple(s) for s in per_level_sizes]
        elif len(anchor_strides) == 1:
            level_sizes = [tuple(sizes)]
        elif len(sizes) == len(anchor_strides):
            level_sizes = [(s,) for s in sizes]
        else:
            raise ValueError(
                f"AnchorGenerator: with several strides (FPN) give one size per stride; got "
                f"sizes {tuple(sizes)} for strides {tuple(anchor_strides)}"
            )
        self.strides = tuple(int(s) for s in anchor_strides)
        self.straddle_thresh = straddle_thresh
        # torchvision's rule: stride of a level = padded batch size // its grid size, per axis.
        self.strides_from_image = strides_from_image
        self.cell_anchors = [generate_cell_anchors(s, aspect_ratios) for s in level_sizes]
        self._cache: OrderedDict[tuple, Tensor] = OrderedDict()
        self._cache_size = cache_size

    def num_anchors_per_location(self) -> list[int]:
        """A: the number of anchors at each location, per level."""
        return [len(cell) for cell in self.cell_anchors]

    def grid_anchors(self, level: int, grid_size: tuple[int, int], device: torch.device, dtype: torch.dtype,
                     stride: tuple[int, int] | None = None) -> Tensor:
        """[H * W * A, 4] anchors of ``level`` for a feature map of ``grid_size = (H, W)``.

        ``stride`` (rows, columns) defaults to the level's stride on both axes. Kept in a
        small least-recently-used cache keyed by (level, H, W, device, dtype, stride).
        """
        stride = (self.strides[level],) * 2 if stride is None else (int(stride[0]), int(stride[1]))
        key = (level, int(grid_size[0]), int(grid_size[1]), torch.device(device), dtype, stride)
        anchors = self._cache.get(key)
        if anchors is not None:
            self._cache.move_to_end(key)
            return anchors
        anchors = self._make_grid_anchors(level, key[1], key[2], key[3], stride).to(dtype)
        self._cache[key] = anchors
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return anchors

    def _make_grid_anchors(self, level: int, height: int, width: int, device: torch.device,
                           stride: tuple[int, int]) -> Tensor:
        cell = self.cell_anchors[level].to(device)
        # Computed in float32 (exact for these integers) and cast once at the end.
        shifts_x = torch.arange(width, dtype=torch.float32, device=device) * stride[1]
        shifts_y = torch.arange(height, dtype=torch.float32, device=device) * stride[0]
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # row-major locations
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        return (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)

    def visibility(self, anchors: Tensor, image_size: tuple[int, int]) -> Tensor:
        """[K] bool: which ``anchors`` [K, 4] lie inside the image ``(width, height)`` up to the threshold."""
        if self.straddle_thresh < 0:
            return torch.ones(anchors.size(0), dtype=torch.bool, device=anchors.device)
        t = self.straddle_thresh
        width, height = image_size
        # Continuous coordinates: an anchor touching the border (x2 == W) is still inside.
        return (
            (anchors[:, 0] >= -t)
            & (anchors[:, 1] >= -t)
            & (anchors[:, 2] <= width + t)
            & (anchors[:, 3] <= height + t)
        )

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[list[BoxList]]:
        """Per image, per level, a BoxList of that level's anchors with the field "visibility".

        ``feature_maps``: [N, C, H_l, W_l] per level, highest resolution first (one per stride).
        The BoxLists have the image's own size (width, height); anchors are shared between images.
        """
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"AnchorGenerator has {len(self.strides)} levels but got {len(feature_maps)} feature maps")
        ref = feature_maps[0]
        padded = image_list.tensors.shape[-2:]
        grids = [
            self.grid_anchors(level, tuple(f.shape[-2:]), ref.device, ref.dtype,
                              (padded[0] // max(f.shape[-2], 1), padded[1] // max(f.shape[-1], 1))
                              if self.strides_from_image else None)
            for level, f in enumerate(feature_maps)
        ]
        anchors = []
        for height, width in image_list.image_sizes:
            per_level = []
            for grid in grids:
                boxlist = BoxList(grid, (width, height), mode="xyxy")
                boxlist.add_field("visibility", self.visibility(grid, (width, height)))
                per_level.append(boxlist)
            anchors.append(per_level)
        return anchors


def build_anchor_generator(cfg: CfgNode) -> AnchorGenerator:
    """AnchorGenerator from MODEL.RPN.{ANCHOR_SIZES, ASPECT_RATIOS, ANCHOR_STRIDE, STRADDLE_THRESH,
    USE_FPN, STRIDES_FROM_IMAGE, ANCHOR_SIZES_ON_EVERY_LEVEL}."""
    rpn = cfg.MODEL.RPN
    if rpn.ANCHOR_SIZES_ON_EVERY_LEVEL:  # torchvision's MobileNet detectors: all sizes on each level
        return AnchorGenerator(rpn.ANCHOR_SIZES, rpn.ASPECT_RATIOS, rpn.ANCHOR_STRIDE, rpn.STRADDLE_THRESH,
                               per_level_sizes=[rpn.ANCHOR_SIZES] * len(rpn.ANCHOR_STRIDE),
                               strides_from_image=rpn.STRIDES_FROM_IMAGE)
    if rpn.USE_FPN and len(rpn.ANCHOR_STRIDE) != len(rpn.ANCHOR_SIZES):
        raise ValueError(
            f"MODEL.RPN.USE_FPN needs one anchor size per stride: ANCHOR_SIZES {tuple(rpn.ANCHOR_SIZES)}, "
            f"ANCHOR_STRIDE {tuple(rpn.ANCHOR_STRIDE)}"
        )
    if not rpn.USE_FPN and len(rpn.ANCHOR_STRIDE) != 1:
        raise ValueError(f"without FPN MODEL.RPN.ANCHOR_STRIDE must have one entry, got {tuple(rpn.ANCHOR_STRIDE)}")
    return AnchorGenerator(rpn.ANCHOR_SIZES, rpn.ASPECT_RATIOS, rpn.ANCHOR_STRIDE, rpn.STRADDLE_THRESH,
                           strides_from_image=rpn.STRIDES_FROM_IMAGE)


make_anchor_generator = build_anchor_generator  # maskrcnn-benchmark's name for it
