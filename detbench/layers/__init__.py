"""Building blocks: compiled ops (roi_align, nms) and layers that models share."""

from .misc import Conv2d, ConvTranspose2d, interpolate
from .nms import batched_nms, nms
from .norm import FrozenBatchNorm2d, group_norm
from .roi_align import ROIAlign, roi_align
from .smooth_l1_loss import smooth_l1_loss

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "FrozenBatchNorm2d",
    "ROIAlign",
    "batched_nms",
    "group_norm",
    "interpolate",
    "nms",
    "roi_align",
    "smooth_l1_loss",
]
