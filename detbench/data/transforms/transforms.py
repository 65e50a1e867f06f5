"""Joint image/target transforms: each takes and returns ``(image, target)``.

``image`` is a PIL image until :class:`ToTensor`, a [3, H, W] float tensor after it;
``target`` is a :class:`BoxList` (or None at inference), transformed with the image so its
masks and keypoints follow. Random choices come from
:func:`~detbench.data.transforms.random_draws.current_generator` (the training loader makes
one per sample from ``(SEED, iteration, dataset index)``), else from torch's default generator.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from detbench.structures import FLIP_LEFT_RIGHT, BoxList

from .random_draws import current_generator


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, target: BoxList | None = None) -> tuple[Any, BoxList | None]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(t) for t in self.transforms)})"


def get_size(image_size: tuple[int, int], min_size: int, max_size: int | None) -> tuple[int, int]:
    """Output ``(width, height)`` for an input of ``image_size = (width, height)``.

    The shorter side becomes ``min_size`` unless the longer side would then exceed
    ``max_size``; in that case the shorter side is ``round(max_size * short / long)``
    (Python's round, halves to even). The longer side keeps the aspect ratio and is
    truncated with ``int()``. Both rules are maskrcnn-benchmark's, so the sizes (and the
    weights trained at them) match it exactly. An image already at the target size is kept.
    Because the capped shorter side is rounded, possibly up, the longer side may exceed
    ``max_size`` by at most ``0.5 * long / short`` pixels (e.g. 1000 x 200 with 800/1333 gives
    1335 x 267), as in maskrcnn-benchmark.
    """
    width, height = image_size
    short, long = float(min(width, height)), float(max(width, height))
    size = min_size
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    if short == size:
        return width, height
    if width < height:
        return size, int(size * height / width)
    return int(size * width / height), size


class Resize:
    """Resize so the shorter side is one of ``min_size`` (drawn uniformly per image) and the
    longer side is at most ``max_size``; see :func:`get_size` for the rounding. Bilinear for
    the image; ``BoxList.resize`` scales boxes, masks and keypoints."""

    def __init__(self, min_size: int | Sequence[int], max_size: int | None) -> None:
        self.min_size = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        if not self.min_size:
            raise ValueError("Resize needs at least one min_size")
        self.max_size = max_size

    def draw_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        choice = self.min_size[int(torch.randint(len(self.min_size), (), generator=current_generator()))]
        return get_size(image_size, choice, self.max_size)

    def __call__(self, image: Image.Image, target: BoxList | None = None) -> tuple[Image.Image, BoxList | None]:
        size = self.draw_size(image.size)
        if size != image.size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        if target is not None and tuple(target.size) != size:
            target = target.resize(size)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_size={self.min_size}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """With probability ``prob`` mirror the image left-right; the target's keypoints swap
    left and right (``PersonKeypoints.transpose``)."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def __call__(self, image: Any, target: BoxList | None = None) -> tuple[Any, BoxList | None]:
        if self.prob <= 0 or float(torch.rand((), generator=current_generator())) >= self.prob:
            return image, target
        if isinstance(image, Tensor):
            image = image.flip(-1)
        else:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image, (target.transpose(FLIP_LEFT_RIGHT) if target is not None else None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob})"


class ToTensor:
    """RGB PIL image -> float32 [3, H, W] with values in [0, 1]."""

    def __call__(self, image: Image.Image, target: BoxList | None = None) -> tuple[Tensor, BoxList | None]:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
        return tensor, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Normalize:
    """``(image - mean) / std`` per channel. With ``to_bgr255`` the RGB [0, 1] input is first
    turned into BGR [0, 255] (Caffe2-trained weights expect it), so mean/std are in that space."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], to_bgr255: bool = True) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"Normalize needs 3 means and 3 positive stds, got {mean}, {std}")
        self.mean, self.std, self.to_bgr255 = list(mean), list(std), to_bgr255

    def __call__(self, image: Tensor, target: BoxList | None = None) -> tuple[Tensor, BoxList | None]:
        if self.to_bgr255:
            image = image[[2, 1, 0]] * 255.0
        mean = image.new_tensor(self.mean)[:, None, None]
        std = image.new_tensor(self.std)[:, None, None]
        return (image - mean) / std, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std}, to_bgr255={self.to_bgr255})"
