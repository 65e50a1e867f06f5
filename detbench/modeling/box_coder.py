"""BoxCoder: boxes <-> regression deltas (dx, dy, dw, dh) relative to reference boxes."""

from __future__ import annotations

import math

import torch
from torch import Tensor


class BoxCoder:
    """Encodes a box as deltas relative to a reference box, and decodes deltas back to boxes.

    With a reference box of width w, height h and centre (cx, cy) (centre = x1 + 0.5 w,
    width = x2 - x1, no "+1") and a target box (w', h', cx', cy'), the deltas are
    ``(wx (cx' - cx) / w, wy (cy' - cy) / h, ww log(w' / w), wh log(h' / h))`` for the
    weights ``(wx, wy, ww, wh)``. The arithmetic follows torchvision's BoxCoder operation by
    operation, so both give the same numbers.
    """

    def __init__(
        self, weights: tuple[float, float, float, float], bbox_xform_clip: float = math.log(1000.0 / 16)
    ) -> None:
        if len(weights) != 4:
            raise ValueError(f"BoxCoder needs 4 weights (wx, wy, ww, wh), got {weights}")
        self.weights = tuple(float(w) for w in weights)
        # Upper bound on dw, dh before exp(): a box grows at most 1000/16 times per decode.
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Deltas [N, 4] that turn ``proposals`` [N, 4] into ``reference_boxes`` [N, 4] (xyxy).

        Computed in ``reference_boxes``' dtype.
        """
        wx, wy, ww, wh = self.weights
        proposals = proposals.to(reference_boxes.dtype)
        ex_w = proposals[:, 2] - proposals[:, 0]
        ex_h = proposals[:, 3] - proposals[:, 1]
        ex_cx = proposals[:, 0] + 0.5 * ex_w
        ex_cy = proposals[:, 1] + 0.5 * ex_h

        gt_w = reference_boxes[:, 2] - reference_boxes[:, 0]
        gt_h = reference_boxes[:, 3] - reference_boxes[:, 1]
        gt_cx = reference_boxes[:, 0] + 0.5 * gt_w
        gt_cy = reference_boxes[:, 1] + 0.5 * gt_h

        # The weight multiplies before the division, as in torchvision (same rounding).
        dx = wx * (gt_cx - ex_cx) / ex_w
        dy = wy * (gt_cy - ex_cy) / ex_h
        dw = ww * torch.log(gt_w / ex_w)
        dh = wh * torch.log(gt_h / ex_h)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """Apply deltas ``rel_codes`` [N, 4k] (k boxes per row, e.g. one per class) to
        ``boxes`` [N, 4] -> decoded boxes [N, 4k] (xyxy), in ``rel_codes``' dtype."""
        boxes = boxes.to(rel_codes.dtype)
        wx, wy, ww, wh = self.weights
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        # Columns j::4 hold coordinate j of every one of the k boxes of a row.
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        dw = torch.clamp(rel_codes[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(rel_codes[:, 3::4] / wh, max=self.bbox_xform_clip)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None])
        half_h = 0.5 * (torch.exp(dh) * heights[:, None])
        pred = torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=2
        )
        return pred.flatten(1)  # [N, k, 4] -> [N, 4k], box-major like rel_codes
