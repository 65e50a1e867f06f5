"""RetinaNet losses: sigmoid focal loss on every non-ignored anchor, smooth L1 on the positives."""

from __future__ import annotations

import torch
from torch import Tensor

from detbench.layers import SigmoidFocalLoss, smooth_l1_loss
from detbench.structures import BoxList
from detbench.structures.boxlist_ops import box_iou

from ...box_coder import BoxCoder
from ...matcher import Matcher

NORMALIZATIONS = ("maskrcnn-benchmark", "torchvision")


def flatten_levels(logits: list[Tensor], deltas: list[Tensor], num_classes: int) -> tuple[Tensor, Tensor]:
    """Per level ``[N, A*K, H, W]`` logits and ``[N, A*4, H, W]`` deltas -> ``[N, R, K]`` and ``[N, R, 4]``.

    R = sum over levels of H * W * A; rows are level-major, then location (row by row), then
    anchor: the order of :class:`AnchorGenerator`'s anchors.
    """
    flat_logits, flat_deltas = [], []
    for cls, box in zip(logits, deltas):
        n, _, h, w = cls.shape
        flat_logits.append(cls.view(n, -1, num_classes, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, num_classes))
        flat_deltas.append(box.view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return torch.cat(flat_logits, dim=1), torch.cat(flat_deltas, dim=1)


class RetinaNetLossComputation:
    """Labels anchors by IoU with the ground truth and computes the two RetinaNet losses.

    Each anchor takes its best ground truth (``Matcher`` with low-quality matches kept): IoU
    >= fg_iou -> that box's label and box target; < bg_iou -> background (label 0); between ->
    ignored, as are anchors beyond ``straddle_thresh`` of the border when it is >= 0. An image
    without ground truth has only background anchors.

    * ``loss_retina_cls``: the focal loss summed over the non-ignored anchors and classes;
    * ``loss_retina_reg``: smooth L1 (``beta``) of the positives' deltas, summed.

    Normalisation: "maskrcnn-benchmark" divides the batch's classification sum by
    (positives + images) and the box sum by max(1, positives * reg_weight); "torchvision"
    divides each image's sums by max(1, its positives) and averages over the images.
    """

    def __init__(self, matcher: Matcher, box_coder: BoxCoder, gamma: float, alpha: float, beta: float,
                 reg_weight: float, normalization: str = "maskrcnn-benchmark", use_visibility: bool = False) -> None:
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"RetinaNet loss normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.matcher = matcher
        self.box_coder = box_coder
        self.focal = SigmoidFocalLoss(gamma, alpha)
        self.beta = beta
        self.reg_weight = reg_weight
        self.normalization = normalization
        self.use_visibility = use_visibility

    def prepare_targets(self, anchors: BoxList, target: BoxList) -> tuple[Tensor, Tensor]:
        """One image: labels [R] (int64: class >= 1, 0 background, -1 ignored) and each anchor's
        matched ground-truth box [R, 4] (xyxy; meaningful where the label is >= 1)."""
        boxes = anchors.bbox
        gt = target.convert("xyxy").bbox.to(boxes.dtype)
        matched = self.matcher(box_iou(gt, boxes))
        gt_labels = target.get_field("labels").to(torch.int64) if len(target) else boxes.new_zeros(0, dtype=torch.int64)
        index = matched.clamp(min=0)
        labels = gt_labels[index] if len(target) else torch.zeros_like(matched)
        labels = torch.where(matched == Matcher.BELOW_LOW_THRESHOLD, 0, labels)
        labels = torch.where(matched == Matcher.BETWEEN_THRESHOLDS, -1, labels)
        if self.use_visibility:
            labels = torch.where(anchors.get_field("visibility"), labels, -1)
        return labels, gt[index] if len(target) else boxes

    def __call__(self, anchors: list[list[BoxList]], logits: list[Tensor], deltas: list[Tensor],
                 targets: list[BoxList]) -> dict[str, Tensor]:
        """``anchors``: per image, per level; ``logits``/``deltas`` per level from the head."""
        if len(targets) != len(anchors):
            raise ValueError(f"RetinaNet loss: {len(targets)} targets for {len(anchors)} images")
        cls_flat, box_flat = flatten_levels(logits, deltas, self.focal_columns(logits, deltas))
        cls_terms, reg_terms, positives = [], [], []
        for i, (per_level, target) in enumerate(zip(anchors, targets)):
            image_anchors = BoxList(torch.cat([a.bbox for a in per_level]), per_level[0].size)
            image_anchors.add_field("visibility", torch.cat([a.get_field("visibility") for a in per_level]))
            labels, matched_boxes = self.prepare_targets(image_anchors, target)
            pos = labels > 0
            cls_terms.append(self.focal(cls_flat[i].float(), labels))
            box_targets = self.box_coder.encode(matched_boxes[pos], image_anchors.bbox[pos])  # positives only
            reg_terms.append(smooth_l1_loss(box_flat[i][pos].float(), box_targets.float(), self.beta,
                                            size_average=False))
            positives.append(int(pos.sum()))
        return self._normalise(cls_terms, reg_terms, positives)

    @staticmethod
    def focal_columns(logits: list[Tensor], deltas: list[Tensor]) -> int:
        """K, the classes per anchor: logit channels / anchors, anchors = delta channels / 4."""
        anchors_per_location = deltas[0].shape[1] // 4
        return logits[0].shape[1] // anchors_per_location

    def _normalise(self, cls_terms: list[Tensor], reg_terms: list[Tensor], positives: list[int]) -> dict[str, Tensor]:
        if self.normalization == "torchvision":
            cls = sum(c / max(1, p) for c, p in zip(cls_terms, positives)) / len(cls_terms)
            reg = sum(r / max(1, p) for r, p in zip(reg_terms, positives)) / len(reg_terms)
        else:
            total = sum(positives)
            cls = sum(cls_terms) / (total + len(cls_terms))
            reg = sum(reg_terms) / max(1.0, total * self.reg_weight)
        return {"loss_retina_cls": cls, "loss_retina_reg": reg}
