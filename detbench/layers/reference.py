"""Slow pure-PyTorch statements of what the compiled ops compute: the test oracle.

These functions are written from the definitions below, with plain loops; they are
meant to be read, not used in models. They follow ``torchvision.ops`` (same
arguments, same result), which the tests also check.
"""

from __future__ import annotations

import math

import torch


def _axis_taps(pos: float, size: int) -> list[tuple[int, float]]:
    """Pixels and weights of linear interpolation at ``pos`` on an axis of ``size`` pixels.

    Pixel i holds the value at coordinate i. A position outside [-1, size] reads
    nothing (empty list); one in [-1, 0] reads pixel 0; one at or beyond size - 1
    reads the last pixel.
    """
    if size == 0 or pos < -1.0 or pos > size:
        return []
    pos = max(pos, 0.0)
    low = int(pos)  # pos >= 0, so this is floor
    if low >= size - 1:
        return [(size - 1, 1.0)]
    frac = pos - low
    return [(low, 1.0 - frac), (low + 1, frac)]


def _roi_weights(roi: list[float], shape: tuple[int, int, int, int], spatial_scale: float,
                 sampling_ratio: int, aligned: bool, dtype: torch.dtype) -> torch.Tensor:
    """Matrix ``[PH * PW, H * W]``: output bin b of this RoI = sum_p W[b, p] * feature[p]."""
    pooled_h, pooled_w, height, width = shape
    shift = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (v * spatial_scale - shift for v in roi)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / pooled_h)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pooled_w)
    count = max(grid_h * grid_w, 1)
    weights = torch.zeros(pooled_h * pooled_w, height * width, dtype=dtype)
    for ph in range(pooled_h):
        for pw in range(pooled_w):
            for iy in range(grid_h):  # empty when grid_h <= 0
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    for row, wy in _axis_taps(y, height):
                        # A sample outside the map along x reads nothing, even if y is inside.
                        for col, wx in _axis_taps(x, width):
                            weights[ph * pooled_w + pw, row * width + col] += wy * wx / count
    return weights


def roi_align_reference(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """RoIAlign by definition; differentiable in ``input`` through autograd.

    ``input [N, C, H, W]``, ``rois [K, 5]`` (batch index, x1, y1, x2, y2) in image
    coordinates -> ``[K, C, PH, PW]`` with ``(PH, PW) = output_size``.

    For each RoI, with ``s = spatial_scale`` and ``shift = 0.5 if aligned else 0``:

    * the box on the feature map is ``(x1 * s - shift, ..., y2 * s - shift)``.
      Feature pixel i holds the value at coordinate i. With ``aligned=True`` the
      shift makes a box edge at image coordinate u land at u * s - 0.5, i.e. pixel i
      covers [i - 0.5, i + 0.5) at the feature scale (pixel centres are at
      integer + 0.5 in the scaled box frame). With ``aligned=False`` (legacy) there is
      no shift, and the box width and height are raised to at least 1;
    * the box is cut into PH x PW equal bins; bin (ph, pw) holds ``gh x gw`` samples
      at ``y = y1' + ph * bin_h + (iy + 0.5) * bin_h / gh`` (same for x), where
      ``gh = sampling_ratio`` if > 0, else ``ceil(box_h / PH)`` (``ceil(box_w / PW)``
      for gw); a box with gh or gw <= 0 (possible when aligned) has no sample;
    * a sample is the bilinear interpolation of the 4 pixels around (y, x); it is 0
      when y < -1 or y > H or x < -1 or x > W; a coordinate in [-1, 0] is clamped to
      0 and one at or beyond the last pixel reads the last pixel;
    * the bin value is the sum of its samples divided by ``max(gh * gw, 1)``.

    Batch indices must be integers in [0, N); an empty map (H or W = 0) gives zeros.
    Computes in the dtype of ``input`` (use float64 as an oracle).
    """
    pooled_h, pooled_w = output_size
    n, channels, height, width = input.shape
    outputs = []
    for roi in rois.tolist():
        batch = int(roi[0])
        if not (0 <= roi[0] < n):
            raise ValueError(f"roi batch index {roi[0]} is not in [0, {n})")
        weights = _roi_weights(roi[1:], (pooled_h, pooled_w, height, width), spatial_scale, sampling_ratio,
                               aligned, input.dtype)
        features = input[batch].reshape(channels, height * width)
        outputs.append((features @ weights.T).reshape(channels, pooled_h, pooled_w))
    if not outputs:
        return input.new_zeros((0, channels, pooled_h, pooled_w))
    return torch.stack(outputs)


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS by definition; returns int64 indices of the kept boxes.

    Boxes ``[N, 4]`` (x1, y1, x2, y2) are visited in decreasing score order; equal
    scores keep their input order (stable sort). A box is kept unless its IoU with a
    box kept before it is > ``iou_threshold``. IoU = inter / (area_a + area_b - inter)
    with area = (x2 - x1) * (y2 - y1) (no +1), computed in the boxes' dtype and
    compared with the threshold in float64; 0 / 0 (two empty boxes) is NaN, which
    suppresses nothing. The result is in visiting order.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    for i in order.tolist():
        if kept:
            others = boxes[kept]
            w = (torch.minimum(others[:, 2], boxes[i, 2]) - torch.maximum(others[:, 0], boxes[i, 0])).clamp(min=0)
            h = (torch.minimum(others[:, 3], boxes[i, 3]) - torch.maximum(others[:, 1], boxes[i, 1])).clamp(min=0)
            inter = w * h
            iou = inter / (areas[kept] + areas[i] - inter)
            if (iou.double() > iou_threshold).any():
                continue
        kept.append(i)
    return torch.tensor(kept, dtype=torch.int64, device=boxes.device)


def batched_nms_reference(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                          iou_threshold: float) -> torch.Tensor:
    """:func:`nms_reference` on each category (``idxs [N]``) alone; int64 indices of the kept boxes.

    Boxes of different categories never suppress each other. The kept boxes of all
    categories are merged by decreasing score; equal scores, also across categories,
    keep their input order.
    """
    kept = []
    for category in torch.unique(idxs).tolist():
        members = torch.nonzero(idxs == category)[:, 0]
        kept.append(members[nms_reference(boxes[members], scores[members], iou_threshold)])
    # Input order first, so that the stable sort by score leaves ties in input order.
    merged = torch.sort(torch.cat(kept)).values if kept else torch.zeros(0, dtype=torch.int64)
    return merged[torch.sort(scores[merged], descending=True, stable=True).indices].to(boxes.device)


def sigmoid_focal_loss_reference(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
                                 alpha: float = 0.25) -> torch.Tensor:
    """Element-wise sigmoid focal loss by definition (Lin et al., 2017); differentiable by autograd.

    With ``p = sigmoid(x)``: ``p_t = p t + (1 - p)(1 - t)``, ``ce = -log`` of the Bernoulli
    likelihood ``-(t log p + (1 - t) log(1 - p))``, ``alpha_t = alpha t + (1 - alpha)(1 - t)``
    (1 when ``alpha < 0``) and ``loss = alpha_t * ce * (1 - p_t) ** gamma``. Written with
    ``logsigmoid`` so that saturated logits stay finite; computes in the dtype of ``logits``.
    """
    p = torch.sigmoid(logits)
    ce = -(targets * torch.nn.functional.logsigmoid(logits) + (1 - targets) * torch.nn.functional.logsigmoid(-logits))
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def _round_half_away(value: float) -> int:
    """Nearest integer, halves away from zero (C's round), clamped to +-2^40 as the kernels do."""
    r = math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)
    return int(max(-(2**40), min(2**40, r)))


def _pool_bins(start: int, extent: int, bins: int, size: int) -> list[tuple[int, int]]:
    """[begin, end) pixel ranges of ``bins`` bins on an axis; bin b spans
    [floor(b * extent / bins), ceil((b + 1) * extent / bins)) + start, clipped to [0, size]."""
    bin_size = extent / bins
    ranges = []
    for b in range(bins):
        begin = min(max(math.floor(b * bin_size) + start, 0), size)
        end = min(max(math.ceil((b + 1) * bin_size) + start, 0), size)
        ranges.append((begin, end))
    return ranges


def roi_pool_reference(input: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int],
                       spatial_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """RoIPool by definition: ``(output [K, C, PH, PW], argmax [K, C, PH, PW] int32)``.

    For each RoI (batch index, x1, y1, x2, y2): the corners scaled by ``spatial_scale`` are
    rounded to integers (halves away from zero); the box covers ``w = max(x2' - x1' + 1, 1)``
    by ``h = max(y2' - y1' + 1, 1)`` pixels; bin (ph, pw) holds the rows
    ``[floor(ph * h / PH), ceil((ph + 1) * h / PH)) + y1'`` and the columns likewise, clipped
    to the map. Its value is the largest pixel, found by scanning rows then columns and
    keeping a pixel only when it is > the best so far, starting from -FLT_MAX (NaN pixels
    are never taken; a bin of pixels all <= -FLT_MAX gives -FLT_MAX and argmax -1); its
    argmax is that pixel's ``h * W + w``. An empty bin is 0 with argmax -1. A RoI with a
    NaN corner has only empty bins. Gradient: each bin's to its argmax pixel.
    """
    pooled_h, pooled_w = output_size
    n, channels, height, width = input.shape
    lowest = -torch.finfo(torch.float32).max
    out = input.new_zeros((rois.size(0), channels, pooled_h, pooled_w))
    argmax = torch.full(out.shape, -1, dtype=torch.int32)
    for k, roi in enumerate(rois.tolist()):
        if not (0 <= roi[0] < n):
            raise ValueError(f"roi batch index {roi[0]} is not in [0, {n})")
        scaled = [v * spatial_scale for v in roi[1:]]
        if any(math.isnan(v) for v in scaled):
            continue
        x1, y1, x2, y2 = (_round_half_away(v) for v in scaled)
        rows = _pool_bins(y1, max(y2 - y1 + 1, 1), pooled_h, height)
        cols = _pool_bins(x1, max(x2 - x1 + 1, 1), pooled_w, width)
        plane = input[int(roi[0])]
        for ph, (h0, h1) in enumerate(rows):
            for pw, (w0, w1) in enumerate(cols):
                if h1 <= h0 or w1 <= w0:
                    continue
                for c in range(channels):
                    best, best_index = lowest, -1
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            if plane[c, h, w].item() > best:
                                best, best_index = plane[c, h, w].item(), h * width + w
                    out[k, c, ph, pw] = best
                    argmax[k, c, ph, pw] = best_index
    return out, argmax
