"""Keypoint R-CNN loss: cross-entropy over heatmap cells, one softmax per labelled keypoint."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from detbench.structures.bounding_box import BoxList


def keypoints_to_heatmap(keypoints: Tensor, rois: Tensor, heatmap_size: int) -> tuple[Tensor, Tensor]:
    """Encode keypoints as the index of the heatmap cell that holds them.

    The box [x1, x2] x [y1, y2] is split into ``heatmap_size`` cells per axis; a keypoint at
    x falls in cell floor((x - x1) * heatmap_size / (x2 - x1)), except that x == x2 (the
    closed right border) belongs to the last cell. Same numbers as torchvision.

    Args:
        keypoints: [K, P, 3] (x, y, visibility) in image pixels, one row per RoI.
        rois: [K, 4] xyxy boxes.
    Returns:
        (targets [K, P] int64 flat cell index y * heatmap_size + x, 0 where not valid;
        valid [K, P] bool: visibility > 0 and the keypoint inside the box).
    """
    x1, y1, x2, y2 = (c[:, None] for c in rois.unbind(1))
    x, y = keypoints[..., 0], keypoints[..., 1]
    col = ((x - x1) * (heatmap_size / (x2 - x1))).floor().long()
    row = ((y - y1) * (heatmap_size / (y2 - y1))).floor().long()
    col = torch.where(x == x2, heatmap_size - 1, col)
    row = torch.where(y == y2, heatmap_size - 1, row)
    inside = (col >= 0) & (row >= 0) & (col < heatmap_size) & (row < heatmap_size)
    valid = inside & (keypoints[..., 2] > 0)
    targets = torch.where(valid, row * heatmap_size + col, 0)
    return targets, valid


def _matched_keypoints(proposals: BoxList, targets: BoxList) -> Tensor:
    """[K, P, 3] keypoints of each proposal's matched ground truth (all unlabelled when the
    image has no ground truth, where "matched_idxs" is 0 for every proposal)."""
    keypoints = targets.get_field("keypoints").keypoints
    matched = proposals.get_field("matched_idxs")
    if keypoints.shape[0] == 0:
        return keypoints.new_zeros((matched.shape[0], *keypoints.shape[1:]))
    return keypoints[matched.to(keypoints.device)]


def keypoint_rcnn_loss(keypoint_logits: Tensor, proposals: Sequence[BoxList], targets: Sequence[BoxList]) -> Tensor:
    """Mean cross-entropy over the valid keypoints of all RoIs, each a softmax over the S x S cells.

    Args:
        keypoint_logits: [K, P, S, S], rows in the order of the concatenated proposals.
        proposals: per image, the RoIs with field "matched_idxs" (index of their ground truth).
        targets: per image, the ground truth with field "keypoints" (a Keypoints, [G, P, 3]).
    Returns:
        A scalar; 0 (still connected to the logits) when no keypoint is valid. Equal to
        torchvision's ``keypointrcnn_loss``, computed without a host sync.
    """
    num_rois, num_kp, height, width = keypoint_logits.shape
    if height != width:
        raise ValueError(f"keypoint heatmaps must be square, got {height} x {width}")
    if num_rois == 0:
        return keypoint_logits.sum() * 0
    rois = torch.cat([p.convert("xyxy").bbox for p in proposals])
    gt = torch.cat([_matched_keypoints(p, t) for p, t in zip(proposals, targets)]).to(rois)
    heatmap_targets, valid = keypoints_to_heatmap(gt, rois, height)
    losses = F.cross_entropy(
        keypoint_logits.reshape(num_rois * num_kp, height * width), heatmap_targets.view(-1), reduction="none"
    )
    valid = valid.view(-1)
    # Mean over the valid entries; where() rather than a product so that a non-finite
    # logit of an unused entry cannot leak in.
    return torch.where(valid, losses, 0.0).sum() / valid.sum().clamp(min=1)
