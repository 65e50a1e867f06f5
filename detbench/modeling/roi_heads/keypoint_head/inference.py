"""Keypoint decoding: heatmap logits -> keypoint locations and scores in the image."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from detbench.structures.bounding_box import BoxList
from detbench.structures.keypoint import Keypoints, PersonKeypoints

from ..mask_head.inference import size_sorted_chunks

# Decoding works on chunks of RoIs whose padded upsampled maps hold at most this many values.
_DECODE_CHUNK_VALUES = 1 << 24
_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) bicubic convolution constant


def _bicubic_matrix(out_sizes: Tensor, in_size: int, max_out: int) -> Tensor:
    """Weights of PyTorch's bicubic resize (align_corners=False) from ``in_size`` samples to
    ``out_sizes[k]`` samples, as a [K, max_out, in_size] matrix per RoI; rows at and beyond
    ``out_sizes[k]`` are zero."""
    dtype = torch.float32
    scale = in_size / out_sizes.to(dtype)  # [K]
    dst = torch.arange(max_out, device=out_sizes.device, dtype=dtype)
    src = scale[:, None] * (dst + 0.5) - 0.5  # not clamped at 0 for bicubic
    base = src.floor()
    t = src - base
    a = _CUBIC_A
    # The four taps at base - 1 .. base + 2: Keys' cubic kernel at distances 1 + t, t, 1 - t, 2 - t.
    weights = torch.stack(
        (
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        ),
        dim=-1,
    )
    # Taps outside the input repeat its border sample, so clamped taps add up.
    taps = (base.long()[..., None] + torch.arange(-1, 3, device=base.device)).clamp(0, in_size - 1)
    rows_used = dst[None] < out_sizes[:, None]
    weights = weights * rows_used[..., None]
    matrix = torch.zeros((out_sizes.shape[0], max_out, in_size), device=out_sizes.device, dtype=dtype)
    return matrix.scatter_add_(2, taps, weights)


def _decode_chunk(maps: Tensor, widths: Tensor, heights: Tensor, out_w: int | Tensor,
                  out_h: int | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[k, P, S, S] maps, [k] int64 resized sizes, maps padded to ``out_h x out_w`` (at least
    the largest size; ints, or 0-dim int64 tensors when traced) -> (col, row [k, P] int64,
    score [k, P])."""
    resize_x = _bicubic_matrix(widths, maps.shape[-1], out_w)  # [k, out_w, S]
    resize_y = _bicubic_matrix(heights, maps.shape[-2], out_h)  # [k, out_h, S]
    upsampled = resize_y[:, None] @ maps.float() @ resize_x[:, None].transpose(-1, -2)  # [k, P, out_h, out_w]
    used = (torch.arange(out_h, device=maps.device)[None, :, None] < heights[:, None, None]) & (
        torch.arange(out_w, device=maps.device)[None, None, :] < widths[:, None, None]
    )
    upsampled = upsampled.masked_fill_(~used[:, None], float("-inf"))
    # Row-major argmax: the first row holding the maximum, then its first column holding it, as
    # on the unpadded map. Two reductions, no flattening: an exported reshape to [K, P, -1]
    # cannot be run for K = 0.
    row_max, row_col = upsampled.max(dim=3)  # [k, P, out_h]
    score, row = row_max.max(dim=2)
    return row_col.gather(2, row[..., None])[..., 0], row, score


def heatmaps_to_keypoints(maps: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
    """Locate each keypoint at the maximum of its heatmap resized to the RoI.

    Same numbers as torchvision's ``heatmaps_to_keypoints``: the [S, S] map is resized
    (bicubic, align_corners=False) to ceil(h) x ceil(w) cells (w, h the RoI size, at least 1);
    the maximum's cell (i, j) gives x = x1 + (j + 0.5) * w / ceil(w), likewise y. Computed
    for chunks of similar-sized RoIs at once as two matrix products (no per-RoI interpolate);
    float32 rounding differs from F.interpolate's by ~1e-5, which can move the maximum
    between two cells whose values tie to that precision.

    Args:
        maps: [K, P, S, S] heatmap logits.
        rois: [K, 4] xyxy boxes in image pixels.
    Returns:
        (keypoints [K, P, 3] float32 rows (x, y, 1), scores [K, P] float32: the resized
        heatmap's value at the maximum).
    """
    num_rois, num_kp = maps.shape[:2]
    widths, heights = _roi_sizes(rois)
    col = torch.zeros((num_rois, num_kp), dtype=torch.int64, device=maps.device)
    row = torch.zeros_like(col)
    score = torch.zeros((num_rois, num_kp), dtype=torch.float32, device=maps.device)
    sizes_w, sizes_h = widths.ceil().long(), heights.ceil().long()
    for idx in size_sorted_chunks(sizes_w, sizes_h, _DECODE_CHUNK_VALUES // max(num_kp, 1)):
        w, h = sizes_w[idx], sizes_h[idx]
        col[idx], row[idx], score[idx] = _decode_chunk(maps[idx], w, h, int(w.max()), int(h.max()))
    return _cells_to_keypoints(col, row, score, rois)


def _roi_sizes(rois: Tensor) -> tuple[Tensor, Tensor]:
    """[K, 4] xyxy -> RoI widths and heights [K], at least 1."""
    return (rois[:, 2] - rois[:, 0]).clamp(min=1), (rois[:, 3] - rois[:, 1]).clamp(min=1)


def _cells_to_keypoints(col: Tensor, row: Tensor, score: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
    """Cells (col, row [K, P]) of the maxima of maps resized to ceil(w) x ceil(h) -> image points."""
    widths, heights = _roi_sizes(rois)
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()
    x = (col.float() + 0.5) * (widths / widths_ceil)[:, None] + rois[:, 0:1]
    y = (row.float() + 0.5) * (heights / heights_ceil)[:, None] + rois[:, 1:2]
    keypoints = torch.stack((x, y, torch.ones_like(x)), dim=2).float()
    return keypoints, score


def heatmaps_to_keypoints_dense(maps: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`heatmaps_to_keypoints` for the export: the same numbers, all RoIs in one chunk
    padded to the largest RoI, with no Python numbers taken from tensors, so that a trace of
    it holds for any number of RoIs (also 0).

    Memory: [K, P, max ceil(h), max ceil(w)] float32 (e.g. 100 RoIs of 17 keypoints at most
    200 x 400 pixels: 544 MB); the eager version bounds it by chunking.
    """
    widths, heights = _roi_sizes(rois)
    sizes_w, sizes_h = widths.ceil().long(), heights.ceil().long()
    one = torch.ones(1, dtype=torch.int64, device=rois.device)  # the maximum of no RoI is 1, not an error
    out_w, out_h = torch.cat((sizes_w, one)).max(), torch.cat((sizes_h, one)).max()
    col, row, score = _decode_chunk(maps, sizes_w, sizes_h, out_w, out_h)
    return _cells_to_keypoints(col, row, score, rois)


class KeypointPostProcessor(nn.Module):
    """Heatmap logits -> fields "keypoints" (a ``keypoint_type``, [K, P, 3] = x, y, 1) and
    "keypoints_scores" [K, P] on each detection."""

    def __init__(self, keypoint_type: type[Keypoints] = PersonKeypoints) -> None:
        super().__init__()
        self.keypoint_type = keypoint_type

    def forward(self, keypoint_logits: Tensor, detections: Sequence[BoxList]) -> list[BoxList]:
        """keypoint_logits: [sum K_i, P, S, S]; detections: one BoxList per image."""
        rois = torch.cat([d.convert("xyxy").bbox for d in detections])
        keypoints, scores = heatmaps_to_keypoints(keypoint_logits, rois)
        counts = [len(d) for d in detections]
        results = []
        for det, kps, score in zip(detections, keypoints.split(counts), scores.split(counts)):
            out = BoxList(det.bbox, det.size, det.mode)
            out.extra_fields = dict(det.extra_fields)
            out.add_field("keypoints", self.keypoint_type(kps, det.size))
            out.add_field("keypoints_scores", score)
            results.append(out)
        return results
