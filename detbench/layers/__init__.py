"""Building blocks: compiled ops (roi_align, roi_pool, nms, sigmoid_focal_loss) and layers that models share."""

from .misc import Conv2d, ConvTranspose2d, interpolate
from .nms import batched_nms, nms
from .norm import FrozenBatchNorm2d, group_norm
from .roi_align import ROIAlign, roi_align
from .roi_pool import ROIPool, roi_pool
from .sigmoid_focal_loss import SigmoidFocalLoss, sigmoid_focal_loss
from .smooth_l1_loss import smooth_l1_loss

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "FrozenBatchNorm2d",
    "ROIAlign",
    "ROIPool",
    "SigmoidFocalLoss",
    "batched_nms",
    "group_norm",
    "interpolate",
    "nms",
    "roi_align",
    "roi_pool",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
]
