"""Masks of detections in image coordinates: pasting [M, M] box-relative masks into the image
(torchvision's numbers, vectorised), and resizing masks that a model already pasted.

Pure tensor code on the structures floor, so that evaluation (data), drawing (utils) and the
mask head (modeling) share it without importing one another.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from detbench.structures.bounding_box import BoxList

# Pasting works on chunks of detections whose padded visible patches hold at most this many pixels.
_PASTE_CHUNK_PIXELS = 1 << 24


def size_sorted_chunks(widths: Tensor, heights: Tensor, budget: int) -> list[Tensor]:
    """Split items of integer sizes [K] into chunks (index tensors) such that
    ``len(chunk) * max(widths[chunk]) * max(heights[chunk]) <= budget``, or a single item.

    Items are taken by decreasing area so that each chunk pads its items to a similar size.
    """
    order = torch.argsort(widths * heights, descending=True)
    w, h = widths[order].cpu(), heights[order].cpu()
    chunks, start = [], 0
    while start < order.numel():  # one iteration per chunk
        count = torch.arange(1, w.numel() - start + 1)
        # Padded size of the chunk [start, start + n) for every n: nondecreasing in n.
        padded = count * torch.cummax(w[start:], 0).values * torch.cummax(h[start:], 0).values
        take = max(1, int((padded <= budget).sum()))
        chunks.append(order[start : start + take])
        start += take
    return chunks


def _expand_boxes(boxes: Tensor, scale: float) -> Tensor:
    """[K, 4] xyxy boxes grown by ``scale`` about their centres (torchvision's arithmetic, so
    the integer boxes derived from them are identical)."""
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return torch.stack((x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half), dim=1)


def _linear_taps(
    offset: Tensor, length: int, out_size: Tensor, in_size: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear (align_corners=False) taps of PyTorch's resize of ``in_size`` samples to
    ``out_size[k]`` samples, for output samples ``offset[k] + 0 .. length - 1``; samples
    outside [0, out_size[k]) get zero weights.

    Returns (i0, i1 [K, length] int64 source indices, w0, w1 [K, length] weights).
    """
    pos = offset[:, None] + torch.arange(length, device=offset.device)
    inside = (pos >= 0) & (pos < out_size[:, None])
    ratio = (in_size / out_size.to(dtype))[:, None]
    # Source coordinate of an output sample's centre, clamped at 0 as PyTorch does (not for bicubic).
    src = (ratio * (pos.to(dtype) + 0.5) - 0.5).clamp(min=0)
    i0 = src.floor().clamp(max=in_size - 1)
    w1 = (src - i0).clamp(0, 1)
    i0 = i0.to(torch.int64)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    zero = torch.zeros((), dtype=dtype, device=offset.device)
    return i0, i1, torch.where(inside, 1.0 - w1, zero), torch.where(inside, w1, zero)


def _aligned_taps(
    offset: Tensor, length: int, start: Tensor, extent: Tensor, in_size: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear taps of an ``in_size``-cell mask that covers exactly [start[k], start[k] +
    extent[k]) of the image (float box edges), for image pixels ``offset[k] + 0 .. length - 1``
    sampled at their centres (+ 0.5), zero outside the mask: ``grid_sample`` with
    align_corners=False and zero padding, as detectron2 pastes.

    Returns (i0, i1 [K, length] int64 cell indices, w0, w1 [K, length] weights).
    """
    pos = offset[:, None] + torch.arange(length, device=offset.device)
    # Cell c's centre lies at start + (c + 0.5) * extent / in_size; a tiny extent is clamped
    # so that a degenerate box gives zeros, not NaNs.
    scale = in_size / extent.to(dtype).clamp(min=1e-6)
    src = (pos.to(dtype) + 0.5 - start.to(dtype)[:, None]) * scale[:, None] - 0.5
    i0 = src.floor()
    w1 = src - i0
    i0 = i0.to(torch.int64)
    i1 = i0 + 1
    zero = torch.zeros((), dtype=dtype, device=offset.device)
    w0 = torch.where((i0 >= 0) & (i0 < in_size), 1.0 - w1, zero)
    w1 = torch.where((i1 >= 0) & (i1 < in_size), w1, zero)
    return i0.clamp(0, in_size - 1), i1.clamp(0, in_size - 1), w0, w1


def _resampled_patch(
    masks: Tensor, boxes: Tensor, window: Tensor, window_size: tuple, aligned: bool = False
) -> Tensor:
    """The pixels of a window of each of k pasted masks: [k, window height, window width].

    masks: [k, S, S] padded masks; boxes: [k, 4] int64 (x1, y1, x2, y2), the resized mask
    covering pixels x1..x2, y1..y2; window: [k, 2] int64 top-left (x, y) of a window of
    ``window_size = (width, height)`` (ints, or 0-dim int64 tensors when traced) in the
    image. Pixels of the window outside the box are zero. ``aligned``: masks [k, M, M]
    unpadded and boxes [k, 4] float, the exact extent of each mask (see :func:`_aligned_taps`).
    """
    size = masks.shape[-1]
    win_x, win_y = window.unbind(1)
    patch_w, patch_h = window_size
    if aligned:
        x0, y0, x1, y1 = boxes.unbind(1)
        ix0, ix1, wx0, wx1 = _aligned_taps(win_x, patch_w, x0, x1 - x0, size, masks.dtype)
        iy0, iy1, wy0, wy1 = _aligned_taps(win_y, patch_h, y0, y1 - y0, size, masks.dtype)
    else:
        # The resized mask is (y2 - y1 + 1) x (x2 - x1 + 1) pixels, at least 1, as in torchvision.
        out_w = (boxes[:, 2] - boxes[:, 0] + 1).clamp(min=1)
        out_h = (boxes[:, 3] - boxes[:, 1] + 1).clamp(min=1)
        ix0, ix1, wx0, wx1 = _linear_taps(win_x - boxes[:, 0], patch_w, out_w, size, masks.dtype)
        iy0, iy1, wy0, wy1 = _linear_taps(win_y - boxes[:, 1], patch_h, out_h, size, masks.dtype)
    # Resample along x for every mask row ([k, S, patch_w]), then along y ([k, patch_h, patch_w]).
    cols = masks.gather(2, ix0[:, None].expand(-1, size, -1)) * wx0[:, None]
    cols += masks.gather(2, ix1[:, None].expand(-1, size, -1)) * wx1[:, None]
    patch = cols.gather(1, iy0[:, :, None].expand(-1, -1, patch_w)) * wy0[:, :, None]
    patch += cols.gather(1, iy1[:, :, None].expand(-1, -1, patch_w)) * wy1[:, :, None]
    return patch


def _paste_chunk(
    out: Tensor, rows: Tensor, masks: Tensor, boxes: Tensor, window: Tensor, window_size: tuple[int, int],
    aligned: bool = False,
) -> None:
    """Write the k detections ``rows`` of ``out`` [K, 1, H, W] (arguments of
    :func:`_resampled_patch`; the window covers the box's visible part, the rest stays zero)."""
    height, width = out.shape[-2:]
    win_x, win_y = window.unbind(1)
    patch_w, patch_h = window_size
    patch = _resampled_patch(masks, boxes, window, window_size, aligned)
    # Flat index of each window pixel in ``out``: all distinct and in bounds.
    start = rows * (height * width) + win_y * width + win_x
    ys = torch.arange(patch_h, device=out.device)[:, None] * width
    xs = torch.arange(patch_w, device=out.device)[None, :]
    index = start[:, None, None] + (ys + xs)[None]
    out.view(-1).index_copy_(0, index.view(-1), patch.reshape(-1).to(out.dtype))


def _padded_int_boxes(masks: Tensor, boxes: Tensor, padding: int) -> tuple[Tensor, Tensor]:
    """[K, 1, M, M] masks -> (zero-padded float masks [K, M + 2p, M + 2p], their int64 boxes [K, 4])."""
    size = masks.shape[-1]
    # Half-precision coordinates would be off by up to a pixel in large images: work in float32.
    padded = F.pad(masks[:, 0].to(torch.promote_types(masks.dtype, torch.float32)), (padding,) * 4)
    # .to(int64) truncates towards zero, as torchvision's conversion does (-0.5 -> 0).
    return padded, _expand_boxes(boxes, (size + 2 * padding) / size).to(torch.int64)


def _aligned_masks_and_footprints(masks: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[K, 1, M, M] masks, [K, 4] float boxes -> (float masks [K, M, M], the boxes in that
    dtype, int64 [K, 4] inclusive pixel ranges x1, y1, x2, y2 that the aligned paste can reach)."""
    size = masks.shape[-1]
    dtype = torch.promote_types(masks.dtype, torch.float32)
    boxes = boxes.to(dtype)
    # Bilinear taps reach half a cell beyond the box; one cell of margin covers that safely.
    cell_w = ((boxes[:, 2] - boxes[:, 0]) / size)[:, None]
    cell_h = ((boxes[:, 3] - boxes[:, 1]) / size)[:, None]
    margin = torch.cat([-cell_w, -cell_h, cell_w, cell_h], dim=1)
    footprint = (boxes + margin).floor().to(torch.int64)
    return masks[:, 0].to(dtype), boxes, footprint


def paste_masks_in_image_dense(masks: Tensor, boxes: Tensor, height: Tensor, width: Tensor,
                               padding: int = 1, aligned: bool = False) -> Tensor:
    """:func:`paste_masks_in_image` for the export: the same numbers, computed over the whole
    image for every detection at once (no chunks, no Python numbers taken from tensors), so
    that a trace of it holds for any image size and any number of detections (also 0).

    Memory: a few [K, height, width] float32 temporaries, the size of the result.

    Args:
        masks: [K, 1, M, M] probabilities; boxes: [K, 4] xyxy in image pixels.
        height, width: the image size, 0-dim int64 tensors (or ints).
        aligned: detectron2's pixel model (see :func:`paste_masks_in_image`); padding unused.
    Returns:
        [K, 1, height, width] float32.
    """
    if aligned:
        dense, float_boxes, footprint = _aligned_masks_and_footprints(masks, boxes)
        window = torch.zeros_like(footprint[:, :2])
        return _resampled_patch(dense, float_boxes, window, (width, height), aligned=True)[:, None]
    padded, int_boxes = _padded_int_boxes(masks, boxes, padding)
    window = torch.zeros_like(int_boxes[:, :2])
    return _resampled_patch(padded, int_boxes, window, (width, height))[:, None]


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor, image_shape: tuple[int, int], padding: int = 1, aligned: bool = False
) -> Tensor:
    """Paste each detection's [M, M] mask into an image-sized canvas.

    Same numbers as torchvision's ``paste_masks_in_image``: the mask is zero-padded by
    ``padding`` cells, its box grown by (M + 2 padding) / M and truncated to integers
    (x1, y1, x2, y2), the padded mask bilinearly resized to (y2 - y1 + 1, x2 - x1 + 1)
    pixels (align_corners=False) and written at rows y1..y2, columns x1..x2, clipped to the
    image; zero elsewhere. Computed for all detections at once (in chunks of similar box
    size, bounding memory) with separable bilinear weights, only over each box's visible
    part, instead of one interpolate call per detection.

    ``aligned=True``: detectron2's numbers instead: the M x M mask covers the float box
    exactly and each pixel takes its bilinear value at the pixel's centre (zero beyond the
    mask's outer cell centres fading to the box edge), no padding, no integer boxes.

    Args:
        masks: [K, 1, M, M] mask probabilities.
        boxes: [K, 4] xyxy boxes in image pixels.
        image_shape: (height, width) of the output.
        padding, aligned: see above (padding is unused when aligned).
    Returns:
        [K, 1, height, width] in the masks' dtype.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    out = masks.new_zeros((masks.shape[0], 1, height, width))
    if masks.shape[0] == 0 or height == 0 or width == 0:
        return out
    # cells: the masks to resample; geometry: their boxes (float when aligned, else the grown
    # integer boxes); footprint: the inclusive pixel range each paste can reach.
    if aligned:
        cells, geometry, footprint = _aligned_masks_and_footprints(masks, boxes)
    else:
        cells, geometry = _padded_int_boxes(masks, boxes, padding)
        footprint = geometry
    # Visible part of each box: columns [x0, min(x2 + 1, W)), rows likewise; empty ones are skipped.
    x0, y0 = footprint[:, 0].clamp(min=0), footprint[:, 1].clamp(min=0)
    vis_w = (footprint[:, 2] + 1).clamp(max=width) - x0
    vis_h = (footprint[:, 3] + 1).clamp(max=height) - y0
    keep = torch.nonzero((vis_w > 0) & (vis_h > 0)).view(-1)
    for chunk in size_sorted_chunks(vis_w[keep], vis_h[keep], _PASTE_CHUNK_PIXELS):
        idx = keep[chunk]
        # Window of the chunk's largest visible size, moved left/up where it would leave the image.
        win_w, win_h = int(vis_w[idx].max()), int(vis_h[idx].max())
        window = torch.stack((x0[idx].clamp(max=width - win_w), y0[idx].clamp(max=height - win_h)), dim=1)
        _paste_chunk(out, idx, cells[idx], geometry[idx], window, (win_w, win_h), aligned)
    return out


class Masker:
    """Pastes masks into their image and optionally thresholds them.

    ``threshold >= 0``: returns bool masks (probability > threshold); < 0 keeps probabilities.
    ``aligned``: detectron2's pixel model (see :func:`paste_masks_in_image`).
    """

    def __init__(self, threshold: float = 0.5, padding: int = 1, aligned: bool = False) -> None:
        self.threshold = threshold
        self.padding = padding
        self.aligned = aligned

    def forward_single_image(self, masks: Tensor, boxes: BoxList) -> Tensor:
        """[K, 1, M, M] probabilities and K boxes -> [K, 1, height, width] for ``boxes.size``."""
        width, height = boxes.size
        pasted = paste_masks_in_image(masks, boxes.convert("xyxy").bbox, (height, width), self.padding, self.aligned)
        return pasted > self.threshold if self.threshold >= 0 else pasted

    def __call__(self, masks: Tensor | Sequence[Tensor], boxes: BoxList | Sequence[BoxList]):
        """One image (a Tensor and a BoxList) or a list of each -> pasted mask(s)."""
        if isinstance(boxes, BoxList):
            return self.forward_single_image(masks, boxes)
        if len(masks) != len(boxes):
            raise ValueError(f"Masker got masks for {len(masks)} images and boxes for {len(boxes)}")
        return [self.forward_single_image(m, b) for m, b in zip(masks, boxes)]


def full_size_masks(masks: torch.Tensor, result: BoxList, pasted: bool = False, aligned: bool = False) -> torch.Tensor:
    """Mask probabilities -> [N, 1, H, W] float32 for ``result.size = (W, H)``.

    Box-relative [N, 1, M, M] masks are pasted into the image as COCO evaluation pastes
    them. ``pasted`` masks (the model's ROI_MASK_HEAD.POSTPROCESS_MASKS, [N, 1, h, w] at the
    network's input size) are resized instead: bilinearly, or nearest when already thresholded.
    ``aligned``: paste with detectron2's pixel model (MODEL.ROI_MASK_HEAD.ALIGNED_MASKS).
    """
    width, height = result.size
    if not pasted:
        return paste_masks_in_image(masks.float(), result.convert("xyxy").bbox, (height, width), aligned=aligned)
    if masks.dtype == torch.bool:
        return F.interpolate(masks.float(), size=(height, width), mode="nearest")
    return F.interpolate(masks.float(), size=(height, width), mode="bilinear", align_corners=False)
