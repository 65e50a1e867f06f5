"""Test-time preprocessing as tensor operations: one RGB uint8 [H, W, 3] image -> network input.

The same numbers as the test data loader (PIL's bilinear resize to :func:`get_size`'s size,
then ``ToTensor`` and ``Normalize``), written without Python numbers taken from the image,
so that a trace of it (TorchScript, ONNX) holds for any image size.

PIL's resize, which this follows step by step (``ImagingResample`` in Pillow's Resample.c):
a horizontal pass, then a vertical one, each output sample a normalised triangle-filter
average of the input samples around ``(i + 0.5) * scale``, the filter widened by the scale
when shrinking (antialiasing); each pass rounds to uint8. Pillow sums in 22-bit fixed point
(weights rounded to multiples of 2**-22, then ``(sum + 2**21) >> 22``); done here in
float64, where every such sum is an exact integer, the result is Pillow's to the bit.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Preprocess", "pil_bilinear_resize", "resized_size"]

_ONE = float(1 << 22)  # Pillow's fixed-point unit for 8-bit images (PRECISION_BITS = 22)


def resized_size(height: Tensor, width: Tensor, min_size: int, max_size: int | None) -> tuple[Tensor, Tensor]:
    """:func:`detbench.data.transforms.transforms.get_size` on [1] float64 tensors.

    Returns (new height, new width) as [1] int64 tensors; the arithmetic follows
    ``get_size`` operation by operation in float64, so the sizes are identical. (One
    element, not 0-dim: the ONNX exporter computes 0-dim float64 "scalars" in float32.)
    """
    short, long = torch.minimum(height, width), torch.maximum(height, width)
    size = torch.full_like(short, float(min_size))
    if max_size is not None:
        capped = torch.round(max_size * short / long)  # round() halves to even, like Python's
        size = torch.where(long / short * min_size > max_size, capped, size)
    portrait = width < height
    # int() truncates; the values are positive, so floor is the same (and ONNX has no Trunc).
    new_w = torch.where(portrait, size, torch.floor(size * width / height))
    new_h = torch.where(portrait, torch.floor(size * height / width), size)
    unchanged = short == size
    new_h, new_w = torch.where(unchanged, height, new_h), torch.where(unchanged, width, new_w)
    return new_h.to(torch.int64), new_w.to(torch.int64)


def _at_least_zero(x: Tensor) -> Tensor:
    """max(x, 0). Not ``clamp``: its ONNX export computes float64 input in float32."""
    return torch.maximum(x, torch.zeros_like(x))


def _triangle_taps(in_size: Tensor, out_size: Tensor) -> tuple[Tensor, Tensor]:
    """Pillow's bilinear coefficients from ``in_size`` to ``out_size`` samples (0-dim int64).

    Returns (index [out, T] int64 input samples, clamped into range; weight [out, T] float64
    in units of 2**-22, integers as Pillow rounds them, zero for unused taps),
    T = 2 ceil(support) + 1 with support = max(in / out, 1).
    """
    in_size, out_size = in_size.reshape(1), out_size.reshape(())
    scale = in_size.double() / out_size.reshape(1).double()  # [1]: see resized_size on 0-dim floats
    filter_scale = torch.maximum(scale, torch.ones_like(scale))
    support = filter_scale  # the bilinear filter's support is 1, widened by the scale
    num_taps = (torch.ceil(support) * 2 + 1).to(torch.int64).reshape(())
    center = (torch.arange(out_size, dtype=torch.float64, device=in_size.device) + 0.5) * scale
    # Pillow's (int) casts truncate; floor differs only below 0, where the clamp makes both 0.
    first = _at_least_zero(torch.floor(center - support + 0.5))
    count = torch.minimum(torch.floor(center + support + 0.5), in_size.double()) - first
    taps = torch.arange(num_taps, dtype=torch.float64, device=in_size.device)
    pos = first[:, None] + taps[None, :]
    weight = _at_least_zero(1.0 - ((pos - center[:, None] + 0.5) * (1.0 / filter_scale)).abs())
    weight = torch.where(taps[None, :] < count[:, None], weight, torch.zeros_like(weight))
    total = weight.sum(dim=1, keepdim=True)
    weight = weight / torch.where(total == 0, torch.ones_like(total), total)
    index = torch.minimum(pos, in_size.double() - 1).to(torch.int64)
    return index, torch.floor(weight * _ONE + 0.5)


def _resample(image: Tensor, dim: int, out_size: Tensor) -> Tensor:
    """One pass along ``dim`` of a float64 [C, H, W] image of uint8 values, rounded as Pillow does."""
    shape = torch._shape_as_tensor(image)
    index, weight = _triangle_taps(shape[dim], out_size)
    taps = torch.index_select(image, dim, index.reshape(-1))
    if dim == 2:  # [C, H, out * T] -> [C, H, out, T]
        taps = taps.reshape(shape[0], shape[1], out_size, -1)
        value = (taps * weight).sum(dim=3)
    else:  # [C, out * T, W] -> [C, out, T, W]
        taps = taps.reshape(shape[0], out_size, -1, shape[2])
        value = (taps * weight[:, :, None]).sum(dim=2)
    value = _at_least_zero(torch.floor((value + _ONE / 2) / _ONE))
    return torch.minimum(value, torch.full_like(value, 255.0))


def pil_bilinear_resize(image: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """``PIL.Image.resize((width, height), BILINEAR)`` of a float64 [C, H, W] image of uint8
    values (0-dim int64 sizes): horizontal pass, then vertical, as Pillow orders them."""
    return _resample(_resample(image, 2, width), 1, height)


class Preprocess(nn.Module):
    """RGB uint8 [H, W, 3] -> (normalised batch [1, 3, H', W'] zero-padded to a multiple of
    ``size_divisibility``, resized size [2] int64 (h, w) before the padding).

    Args: the test-time INPUT settings (MIN_SIZE_TEST, MAX_SIZE_TEST, PIXEL_MEAN, PIXEL_STD,
    TO_BGR255) and DATALOADER.SIZE_DIVISIBILITY, as :func:`build_transforms` uses them.
    """

    def __init__(self, min_size: int, max_size: int | None, mean: Sequence[float], std: Sequence[float],
                 to_bgr255: bool, size_divisibility: int = 0) -> None:
        super().__init__()
        self.min_size, self.max_size = int(min_size), max_size
        self.to_bgr255 = bool(to_bgr255)
        self.size_divisibility = int(size_divisibility)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[:, None, None], persistent=False)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        shape = torch._shape_as_tensor(image)
        height, width = resized_size(shape[0:1].double(), shape[1:2].double(), self.min_size, self.max_size)
        chw = pil_bilinear_resize(image.permute(2, 0, 1).to(torch.float64), height[0], width[0]).to(torch.float32)
        chw = chw / 255.0  # ToTensor, then Normalize, as the data loader computes them
        if self.to_bgr255:
            chw = chw.flip(0) * 255.0
        chw = (chw - self.mean) / self.std
        return self._pad(chw)[None], torch.cat((height, width))

    def _pad(self, chw: Tensor) -> Tensor:
        """Zero padding at the bottom and right up to a multiple of ``size_divisibility``."""
        if self.size_divisibility <= 0:
            return chw
        shape = torch._shape_as_tensor(chw)
        d = self.size_divisibility
        pad_h, pad_w = (-shape[1]) % d, (-shape[2]) % d
        return torch.nn.functional.pad(chw, [0, pad_w, 0, pad_h])
