"""torchvision's resize (INPUT.RESIZE_MODE "torchvision"): the one GeneralizedRCNNTransform applies.

torchvision's detection models resize inside the model: one scale ``s = min(min_size / short,
max_size / long)`` for both axes, output sides ``floor(side * s)`` (``F.interpolate`` with
``scale_factor`` and ``recompute_scale_factor=True``), bilinear interpolation of the float
image (``align_corners=False``, no antialiasing). detbench's default (:class:`.transforms.Resize`)
follows maskrcnn-benchmark instead: the shorter side becomes exactly ``min_size`` (rounded when
capped), the longer truncated, and PIL's bilinear filter, which antialiases when it shrinks, on the
8-bit image. Both give slightly different pixels and sizes; this one reproduces torchvision's
inputs, so that torchvision-trained weights give torchvision's detections (tools/compare_training.py).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from detbench.structures import BoxList

from .random_draws import current_generator


def torchvision_size(image_size: tuple[int, int], min_size: int, max_size: int) -> tuple[int, int]:
    """Output ``(width, height)`` for ``image_size = (width, height)``, as torchvision computes it:
    ``s = min(min_size / short, max_size / long)``, each side ``floor(side * s)`` in double precision."""
    width, height = image_size
    scale = min(min_size / min(width, height), max_size / max(width, height))
    return math.floor(width * scale), math.floor(height * scale)


class TorchvisionResize:
    """Resize a float [3, H, W] image tensor (after ``ToTensor``) as torchvision's
    GeneralizedRCNNTransform does: the shorter side's target drawn uniformly from ``min_size``
    per image, sizes by :func:`torchvision_size`, bilinear ``F.interpolate``. The target follows
    through ``BoxList.resize`` (boxes scaled per axis, bitmasks nearest), as torchvision's."""

    def __init__(self, min_size: int | Sequence[int], max_size: int) -> None:
        self.min_size = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        if not self.min_size:
            raise ValueError("TorchvisionResize needs at least one min_size")
        self.max_size = max_size

    def __call__(self, image: Tensor, target: BoxList | None = None) -> tuple[Tensor, BoxList | None]:
        if not isinstance(image, Tensor):
            raise TypeError(f"TorchvisionResize resizes [3, H, W] tensors (after ToTensor), got {type(image).__name__}")
        choice = self.min_size[int(torch.randint(len(self.min_size), (), generator=current_generator()))]
        size = torchvision_size((image.shape[-1], image.shape[-2]), choice, self.max_size)
        if size != (image.shape[-1], image.shape[-2]):
            image = F.interpolate(image[None], size=(size[1], size[0]), mode="bilinear", align_corners=False)[0]
        if target is not None and tuple(target.size) != size:
            target = target.resize(size)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_size={self.min_size}, max_size={self.max_size})"
