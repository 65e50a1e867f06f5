"""RoI pooling over one or several feature maps (FPN levels) with RoIAlign or RoIPool.

Boxes are given in input-image pixels (xyxy, see :class:`BoxList`); each feature map
``l`` has a scale ``scales[l]`` = 1 / stride that turns image pixels into feature cells.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.config.validate_retinanet import POOLER_METHODS
from detbench.layers.roi_align import roi_align
from detbench.layers.roi_pool import roi_pool
from detbench.structures.bounding_box import BoxList
from detbench.structures.boxlist_ops import box_area


def _level_of_scale(scale: float) -> int:
    """Pyramid level k of a feature map with scale 2**-k (stride 2**k), e.g. 1/16 -> 4."""
    level = -math.log2(scale)
    # Scales of real pyramids are exact powers of two; rounding absorbs 1/stride float error.
    if abs(level - round(level)) > 1e-3:
        raise ValueError(f"pooler scale {scale} is not a power of two (1 / stride)")
    return round(level)


class LevelMapper:
    """Assigns each box to a pyramid level with eq. (1) of the FPN paper.

    ``k = floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps)``, clamped to
    ``[k_min, k_max]``; a box of ``canonical_scale`` pixels square goes to
    ``canonical_level``. This is torchvision's LevelMapper arithmetic (eps added after the
    log); maskrcnn-benchmark adds eps inside the log, which differs only for boxes within
    ~1e-6 relative size of a level boundary.
    """

    def __init__(
        self, k_min: int, k_max: int, canonical_scale: int = 224, canonical_level: int = 4, eps: float = 1e-6
    ) -> None:
        if k_min > k_max:
            raise ValueError(f"LevelMapper needs k_min <= k_max, got {k_min} > {k_max}")
        self.k_min = k_min
        self.k_max = k_max
        self.s0 = canonical_scale
        self.lvl0 = canonical_level
        self.eps = eps

    def __call__(self, boxes: Tensor) -> Tensor:
        """[K, 4] xyxy boxes in image pixels -> [K] int64 level index, 0 for ``k_min``."""
        s = torch.sqrt(box_area(boxes))
        # The eps tensor keeps the dtype of s, as torchvision does, so float32 stays float32.
        eps = torch.tensor(self.eps, dtype=s.dtype, device=s.device)
        target = torch.floor(self.lvl0 + torch.log2(s / self.s0) + eps)
        target = torch.clamp(target, min=self.k_min, max=self.k_max)
        return target.to(torch.int64) - self.k_min


def convert_to_roi_format(boxes: Sequence[BoxList]) -> Tensor:
    """Per-image BoxLists -> [sum K_i, 5] rows (image index, x1, y1, x2, y2), images in order."""
    bbox = [b.convert("xyxy").bbox for b in boxes]
    # full_like takes each image's box count from its tensor, so a trace holds for any count.
    ids = [torch.full_like(b[:, :1], i) for i, b in enumerate(bbox)]
    return torch.cat([torch.cat(ids, dim=0), torch.cat(bbox, dim=0)], dim=1)


class Pooler(nn.Module):
    """Pools a fixed-size feature for every box, from the pyramid level its size selects.

    Args:
        output_size: (height, width) of each pooled feature, in cells.
        scales: scale of each feature map (1 / stride), highest resolution first. Features
            beyond ``len(scales)`` are ignored (e.g. the FPN's P6, which only the RPN uses).
        sampling_ratio: bilinear samples per cell and axis; <= 0 is adaptive
            (ceil(box size / output size)).
        aligned: RoIAlign's half-pixel shift (False as in maskrcnn-benchmark and torchvision).
        method: "ROIAlign" or "ROIPool" (which ignores sampling_ratio and aligned).
        canonical_scale, canonical_level: the FPN level rule, see :class:`LevelMapper`.
    """

    def __init__(
        self,
        output_size: tuple[int, int],
        scales: Sequence[float],
        sampling_ratio: int,
        aligned: bool = False,
        canonical_scale: int = 224,
        canonical_level: int = 4,
        method: str = "ROIAlign",
    ) -> None:
        super().__init__()
        if len(scales) == 0:
            raise ValueError("Pooler needs at least one scale")
        if method not in POOLER_METHODS:
            raise ValueError(f"Pooler method must be one of {POOLER_METHODS}, got {method!r}")
        self.method = method
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.scales = tuple(float(s) for s in scales)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.map_levels: LevelMapper | None = None
        if len(self.scales) > 1:
            k_min, k_max = _level_of_scale(self.scales[0]), _level_of_scale(self.scales[-1])
            self.map_levels = LevelMapper(k_min, k_max, canonical_scale, canonical_level)

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        # roi_align wants rois in the features' dtype (e.g. float16 features, float32 boxes).
        rois = rois.to(feature.dtype)
        if self.method == "ROIPool":
            return roi_pool(feature, rois, self.output_size, scale)
        return roi_align(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)

    def forward(self, features: Sequence[Tensor], boxes: Sequence[BoxList]) -> Tensor:
        """features: per level [N, C, H_l, W_l]; boxes: N BoxLists in image pixels.

        Returns [sum K_i, C, oh, ow], rows in the order of the concatenated boxes.
        """
        if len(features) < len(self.scales):
            raise ValueError(f"Pooler has {len(self.scales)} scales but got {len(features)} feature maps")
        rois = convert_to_roi_format(boxes)
        if self.map_levels is None:
            return self._pool(features[0], rois, self.scales[0])

        # Levels come from the boxes in their own precision, before any cast to the features' dtype.
        levels = self.map_levels(rois[:, 1:])
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = torch.where(levels == level)[0]
            # Under autocast a level's pooled features may come in another dtype; keep the first's.
            pooled.append(self._pool(feature, rois[idx], scale).to(features[0].dtype))
            order.append(idx)
        # The levels' rows are concatenated in level order, then put back in box order with one
        # gather. Writing each level into a zero tensor (index_put_) costs a clone of the whole
        # [K, C, oh, ow] gradient per level in backward; result[idx] = ... also freezes a
        # one-RoI level's shape in a trace. argsort of the concatenated indices (a permutation
        # of 0..K-1) is the inverse permutation: row i of the output is box i's feature.
        inverse = torch.argsort(torch.cat(order))
        return torch.cat(pooled, dim=0).index_select(0, inverse)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, scales={self.scales}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, method={self.method}"
        )


def build_pooler(cfg: CfgNode, head: str) -> Pooler:
    """The Pooler of ``cfg.MODEL[head]`` (e.g. "ROI_BOX_HEAD"): its POOLER_RESOLUTION,
    POOLER_SCALES, POOLER_SAMPLING_RATIO, POOLER_ALIGNED and POOLER_METHOD."""
    node = cfg.MODEL[head]
    resolution = node.POOLER_RESOLUTION
    return Pooler(
        output_size=(resolution, resolution),
        scales=node.POOLER_SCALES,
        sampling_ratio=node.POOLER_SAMPLING_RATIO,
        aligned=node.POOLER_ALIGNED,
        method=node.POOLER_METHOD,
    )


make_pooler = build_pooler  # maskrcnn-benchmark's name for it
