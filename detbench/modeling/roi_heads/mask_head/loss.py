"""Mask R-CNN mask loss: per-pixel binary cross-entropy on each positive RoI's class channel."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from detbench.layers import roi_align
from detbench.structures.bounding_box import BoxList


def project_masks_on_boxes(
    gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, resolution: int, aligned: bool = False
) -> Tensor:
    """Resample each box's matched ground-truth mask to ``resolution x resolution``.

    Args:
        gt_masks: [G, H, W] full-image masks (0/1, any dtype).
        boxes: [K, 4] xyxy boxes in the masks' pixel coordinates.
        matched_idxs: [K] index into ``gt_masks`` for each box.
    Returns:
        [K, resolution, resolution] in [0, 1], in the boxes' dtype: RoIAlign of the mask
        over the box (spatial scale 1, adaptive sampling; soft values at the mask's edges).
        ``aligned=False`` gives torchvision's ``project_masks_on_boxes`` numbers, which read
        mask pixel k as if its centre were at k, not k + 0.5: the target is the ground truth
        half a pixel up and left. ``aligned=True`` (detectron2) samples at the true centres.
    """
    rois = torch.cat([matched_idxs.to(boxes)[:, None], boxes], dim=1)
    return roi_align(gt_masks[:, None].to(boxes), rois, (resolution, resolution), 1.0, 0, aligned)[:, 0]


def _mask_targets(proposals: BoxList, targets: BoxList, resolution: int, aligned: bool = False) -> Tensor:
    """[K, M, M] targets of one image's positive proposals."""
    matched = proposals.get_field("matched_idxs")
    boxes = proposals.convert("xyxy").bbox
    if len(proposals) == 0:
        return boxes.new_zeros((0, resolution, resolution))
    # Rasterise only the ground truths that some proposal matched (polygons -> bitmasks on CPU).
    used, local_idx = torch.unique(matched, return_inverse=True)
    gt_masks = targets.get_field("masks")[used.to("cpu")].get_mask_tensor().to(boxes.device)
    return project_masks_on_boxes(gt_masks, boxes, local_idx, resolution, aligned)


def mask_rcnn_loss(
    mask_logits: Tensor,
    proposals: Sequence[BoxList],
    targets: Sequence[BoxList],
    target_threshold: float | None = None,
    aligned: bool = False,
) -> Tensor:
    """Mean binary cross-entropy with logits over the positive RoIs' ground-truth class channel.

    Args:
        mask_logits: [K, num_classes, M, M], rows in the order of the concatenated proposals.
        proposals: per image, the positive proposals with fields "labels" (their ground-truth
            class, > 0) and "matched_idxs" (index of their ground truth in that image's target).
        targets: per image, the ground truth with field "masks" (a SegmentationMask).
        target_threshold: None keeps the soft RoIAlign targets (torchvision); a number
            binarises them (target > threshold), as maskrcnn-benchmark / detectron2 do.
        aligned: cut the targets with RoIAlign's half-pixel correction
            (MODEL.ROI_MASK_HEAD.ALIGNED_MASKS, see :func:`project_masks_on_boxes`).
    Returns:
        A scalar; 0 (still connected to ``mask_logits``) when there is no positive RoI.
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0
    resolution = mask_logits.shape[-1]
    labels = torch.cat([p.get_field("labels") for p in proposals])
    mask_targets = torch.cat([_mask_targets(p, t, resolution, aligned) for p, t in zip(proposals, targets)])
    if target_threshold is not None:
        mask_targets = (mask_targets > target_threshold).to(mask_targets.dtype)
    rows = torch.arange(labels.shape[0], device=labels.device)
    return F.binary_cross_entropy_with_logits(mask_logits[rows, labels], mask_targets.to(mask_logits.dtype))
