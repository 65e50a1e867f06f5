"""ImageList: a zero-padded batch of images of different sizes, with each image's true size."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


class ImageList:
    """A batch ``tensors`` [B, C, H, W] holding B images padded at the bottom and right, and
    ``image_sizes``: B pairs ``(height, width)`` of the valid region of each image.

    Note the order: ``image_sizes`` is ``(height, width)`` like a tensor's shape (as in
    maskrcnn-benchmark), while :class:`BoxList`'s ``size`` is ``(width, height)``. Image b
    occupies ``tensors[b, :, :h, :w]``; the rest of the batch is padding.
    """

    def __init__(self, tensors: Tensor, image_sizes: Sequence[tuple[int, int]]) -> None:
        if not isinstance(tensors, Tensor) or tensors.dim() != 4:
            shape = tuple(tensors.shape) if isinstance(tensors, Tensor) else type(tensors).__name__
            raise ValueError(f"ImageList needs a [B, C, H, W] tensor, got {shape}")
        sizes = [(int(h), int(w)) for h, w in image_sizes]
        if len(sizes) != tensors.size(0):
            raise ValueError(f"{len(sizes)} image sizes for a batch of {tensors.size(0)} images")
        height, width = tensors.shape[-2:]
        if any(h > height or w > width for h, w in sizes):
            raise ValueError(f"image sizes {sizes} (height, width) exceed the batch's {(height, width)}")
        self.tensors = tensors
        self.image_sizes = sizes

    def to(self, device: torch.device | str) -> ImageList:
        """The same batch on ``device``."""
        return ImageList(self.tensors.to(device), self.image_sizes)

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tensors={tuple(self.tensors.shape)}, image_sizes={self.image_sizes})"


def _round_up(value: int, divisor: int) -> int:
    """Smallest multiple of ``divisor`` >= ``value`` (``value`` itself when divisor <= 0)."""
    if divisor <= 0:
        return value
    return (value + divisor - 1) // divisor * divisor


def _pad_batch(images: Sequence[Tensor], size_divisibility: int) -> Tensor:
    """B tensors [C, Hi, Wi] -> [B, C, H, W] zero-padded at the bottom/right, with H, W the
    largest Hi, Wi rounded up to a multiple of ``size_divisibility``."""
    first = images[0]
    for image in images:
        if not isinstance(image, Tensor) or image.dim() != 3 or image.size(0) != first.size(0):
            raise ValueError(
                f"to_image_list needs [C, H, W] images with the same C, got "
                f"{[tuple(i.shape) if isinstance(i, Tensor) else type(i).__name__ for i in images]}"
            )
        if image.dtype != first.dtype or image.device != first.device:
            raise ValueError("to_image_list needs images of one dtype and device")
    height = _round_up(max(i.size(1) for i in images), size_divisibility)
    width = _round_up(max(i.size(2) for i in images), size_divisibility)
    batch = first.new_zeros((len(images), first.size(0), height, width))
    for i, image in enumerate(images):  # one block copy per image (plain indexing keeps autograd)
        batch[i, :, : image.size(1), : image.size(2)].copy_(image)
    return batch


def to_image_list(
    tensors: ImageList | Tensor | Sequence[Tensor], size_divisibility: int = 0
) -> ImageList:
    """Batch images into an :class:`ImageList`.

    ``tensors`` may be an ImageList (returned as it is unless its padded size is not a
    multiple of ``size_divisibility``), a [C, H, W] or [B, C, H, W] tensor (all images of
    size (H, W)), or a list of [C, Hi, Wi] tensors. The batch is zero-padded at the bottom
    and right to the largest height and width, each rounded up to a multiple of
    ``size_divisibility`` when it is > 0 (a backbone with stride 32 needs 32).
    """
    if isinstance(tensors, ImageList):
        sizes, images = tensors.image_sizes, tensors.tensors
    elif isinstance(tensors, Tensor):
        if tensors.dim() == 3:
            tensors = tensors[None]
        if tensors.dim() != 4:
            raise ValueError(f"to_image_list needs a [C, H, W] or [B, C, H, W] tensor, got {tuple(tensors.shape)}")
        sizes, images = [tuple(tensors.shape[-2:])] * tensors.size(0), tensors
    elif isinstance(tensors, (list, tuple)) and tensors:
        return ImageList(_pad_batch(tensors, size_divisibility), [tuple(i.shape[-2:]) for i in tensors])
    else:
        raise TypeError(f"to_image_list needs an ImageList, a tensor or a non-empty list of tensors, got {tensors!r}")
    height, width = images.shape[-2:]
    pad_h = _round_up(height, size_divisibility) - height
    pad_w = _round_up(width, size_divisibility) - width
    if pad_h == 0 and pad_w == 0:
        return tensors if isinstance(tensors, ImageList) else ImageList(images, sizes)
    # F.pad's order is (left, right, top, bottom) for the last two dims: pad right and bottom.
    return ImageList(F.pad(images, (0, pad_w, 0, pad_h)), sizes)
