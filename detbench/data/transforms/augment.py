"""Training augmentations beyond resize and flip: large-scale jitter with a random crop, and colour jitter.

Both draw from the sample's generator (:func:`~detbench.data.transforms.random_draws.current_generator`),
so they replay exactly after a resume and for any number of loader workers. Geometry goes
through the target's own ``resize`` / ``crop`` (boxes, polygon or bitmask masks and
keypoints move together); the image through ``torchvision.transforms.v2.functional``.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF
from PIL import Image

from detbench.structures import BoxList

from .random_draws import current_generator


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=current_generator(), dtype=torch.float64))


class ScaleJitterCrop:
    """Large-scale jitter (LSJ, Ghiasi et al. 2021): scale the image by
    ``s * min(target_size / width, target_size / height)`` with ``s`` uniform in
    [min_scale, max_scale] (aspect ratio kept), then, where a side exceeds ``target_size``,
    cut a window of ``target_size`` at a uniformly drawn offset. Instances whose box leaves
    the window entirely are dropped, with their masks and keypoints; boxes are clipped to it.
    The image is not padded to the square here: batching pads each batch to its largest image.
    """

    def __init__(self, target_size: int, min_scale: float = 0.1, max_scale: float = 2.0) -> None:
        if target_size <= 0 or not 0 < min_scale <= max_scale:
            raise ValueError(f"ScaleJitterCrop needs target_size > 0 and 0 < min_scale <= max_scale, got "
                             f"{target_size}, {min_scale}, {max_scale}")
        self.target_size, self.min_scale, self.max_scale = target_size, min_scale, max_scale

    def draw(self, image_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """((scaled width, height), crop window (x1, y1, x2, y2) in the scaled image)."""
        width, height = image_size
        scale = _uniform(self.min_scale, self.max_scale) * min(self.target_size / width, self.target_size / height)
        # Rounded to whole pixels, at least one; the boxes scale by the same rounded ratio.
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        crop_w, crop_h = min(size[0], self.target_size), min(size[1], self.target_size)
        left = int(torch.randint(size[0] - crop_w + 1, (), generator=current_generator()))
        top = int(torch.randint(size[1] - crop_h + 1, (), generator=current_generator()))
        return size, (left, top, left + crop_w, top + crop_h)

    def __call__(self, image: Image.Image, target: BoxList | None = None) -> tuple[Image.Image, BoxList | None]:
        size, window = self.draw(image.size)
        image = TF.resize(image, [size[1], size[0]], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        left, top, right, bottom = window
        if (right - left, bottom - top) != size:
            image = TF.crop(image, top, left, bottom - top, right - left)
        if target is not None:
            target = target.resize(size)
            if (right - left, bottom - top) != size:
                target = target.crop(window)
            target = target.clip_to_image(remove_empty=True)
        return image, target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(target_size={self.target_size}, min_scale={self.min_scale}, "
                f"max_scale={self.max_scale})")


class ColorJitter:
    """``torchvision.transforms.v2.ColorJitter`` on the image only (the target is unchanged).

    torchvision draws its factors from torch's global generator; here they come from a seed
    drawn from the sample's generator, inside :func:`torch.random.fork_rng`, so the draws are
    the sample's own and the global stream is left as it was.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0) -> None:
        self.jitter = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    def __call__(self, image: Any, target: BoxList | None = None) -> tuple[Any, BoxList | None]:
        seed = int(torch.randint(2**62, (), generator=current_generator()))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image = self.jitter(image)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.jitter!r})"
