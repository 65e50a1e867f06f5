"""Building blocks: compiled ops (roi_align, nms) and layers that models share."""

from .misc import Conv2d, ConvTranspose2d, interpolate
from .norm import FrozenBatchNorm2d, group_norm
from .smooth_l1_loss import smooth_l1_loss

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "FrozenBatchNorm2d",
    "group_norm",
    "interpolate",
    "smooth_l1_loss",
]
