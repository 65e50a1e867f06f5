"""Fast R-CNN training targets (proposal sampling) and losses.

The numbers follow torchvision's RoIHeads (select_training_samples, fastrcnn_loss):
ground truth appended after the proposals, IoU matching without low-quality matches,
proposals between the thresholds ignored, smooth L1 (beta 1/9, summed) on the
ground-truth class's deltas divided by the number of sampled proposals. Optionally
(detectron2's BBOX_REG_LOSS_TYPE "giou") the generalized IoU loss between the decoded box and
its ground truth, with the same normalisation.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss
from yacs.config import CfgNode

from detbench.layers import smooth_l1_loss
from detbench.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from detbench.modeling.box_coder import BoxCoder
from detbench.modeling.matcher import Matcher
from detbench.modeling.utils import cat
from detbench.structures.bounding_box import BoxList
from detbench.structures.boxlist_ops import boxlist_iou


class FastRCNNLossComputation:
    """Samples proposals for the box head (:meth:`subsample`) and computes its losses (``__call__``).

    Args:
        proposal_matcher: assigns each proposal to a ground-truth box (or background / ignore).
        fg_bg_sampler: picks the foreground and background proposals to train on.
        box_coder: encodes the regression targets.
        add_gt_proposals: append each image's ground-truth boxes to its proposals first.
        cls_agnostic_bbox_reg: box deltas have 2 classes (background, object) instead of C.
        smooth_l1_beta: beta of the box loss (1/9 as torchvision and maskrcnn-benchmark).
        loss_type: "smooth_l1" on the deltas or "giou" on the decoded boxes.
        loss_weight: factor on the box loss.
    """

    def __init__(
        self,
        proposal_matcher: Matcher,
        fg_bg_sampler: BalancedPositiveNegativeSampler,
        box_coder: BoxCoder,
        add_gt_proposals: bool = True,
        cls_agnostic_bbox_reg: bool = False,
        smooth_l1_beta: float = 1.0 / 9,
        loss_type: str = "smooth_l1",
        loss_weight: float = 1.0,
    ) -> None:
        if loss_type not in ("smooth_l1", "giou"):
            raise ValueError(f"box loss type must be 'smooth_l1' or 'giou', got {loss_type!r}")
        self.proposal_matcher = proposal_matcher
        self.fg_bg_sampler = fg_bg_sampler
        self.box_coder = box_coder
        self.add_gt_proposals = add_gt_proposals
        self.cls_agnostic_bbox_reg = cls_agnostic_bbox_reg
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_type, self.loss_weight = loss_type, loss_weight

    def match_targets(self, proposals: BoxList, target: BoxList) -> tuple[Tensor, Tensor, Tensor]:
        """One image: -> (labels [N] int64: class, 0 background, -1 ignored;
        matched_idxs [N] int64: matched target, clamped to 0 for background / ignored;
        matched_boxes [N, 4] xyxy: the matched target's box)."""
        n = len(proposals)
        device = proposals.bbox.device
        if len(target) == 0:
            zeros = torch.zeros(n, dtype=torch.int64, device=device)
            # All background; matching each proposal to itself gives unused but finite (zero)
            # regression targets, where torchvision's zero box would give -inf.
            return zeros, zeros.clone(), proposals.convert("xyxy").bbox
        matches = self.proposal_matcher(boxlist_iou(target, proposals))
        matched_idxs = matches.clamp(min=0)
        labels = target.get_field("labels").to(torch.int64)[matched_idxs]
        labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
        labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1  # the sampler skips these
        gt_boxes = target.convert("xyxy").bbox.to(proposals.bbox.dtype)
        return labels, matched_idxs, gt_boxes[matched_idxs]

    def _with_gt(self, proposals: BoxList, target: BoxList) -> BoxList:
        """Proposal boxes (no fields) followed by the target's boxes."""
        boxes = proposals.convert("xyxy").bbox
        if self.add_gt_proposals:
            boxes = torch.cat([boxes, target.convert("xyxy").bbox.to(boxes.dtype)], dim=0)
        return BoxList(boxes, proposals.size, mode="xyxy")

    @torch.no_grad()
    def subsample(self, proposals: Sequence[BoxList], targets: Sequence[BoxList]) -> list[BoxList]:
        """Per image, the sampled proposals (index order) with fields "labels" [K_i] int64,
        "regression_targets" [K_i, 4] and "matched_idxs" [K_i] int64."""
        if len(proposals) != len(targets):
            raise ValueError(f"got {len(proposals)} proposal lists for {len(targets)} targets")
        proposals = [self._with_gt(p, t) for p, t in zip(proposals, targets)]
        matched = [self.match_targets(p, t) for p, t in zip(proposals, targets)]
        pos, neg = self.fg_bg_sampler([labels for labels, _, _ in matched])
        sampled = []
        for boxes, (labels, idxs, gt_boxes), pos_i, neg_i in zip(proposals, matched, pos, neg):
            keep = torch.where(pos_i | neg_i)[0]
            out = boxes[keep]
            out.add_field("labels", labels[keep])
            out.add_field("matched_idxs", idxs[keep])
            out.add_field("regression_targets", self.box_coder.encode(gt_boxes[keep], out.bbox))
            sampled.append(out)
        return sampled

    def __call__(
        self, class_logits: Tensor, box_regression: Tensor, proposals: Sequence[BoxList]
    ) -> tuple[Tensor, Tensor]:
        """class_logits [K, C], box_regression [K, 4C] (or [K, 8] class-agnostic) for the
        concatenated ``proposals`` returned by :meth:`subsample` -> (loss_classifier, loss_box_reg)."""
        labels = cat([p.get_field("labels") for p in proposals], dim=0)
        targets = cat([p.get_field("regression_targets") for p in proposals], dim=0)
        if labels.numel() == 0:
            # No sampled proposal at all: zero losses that still reach every parameter.
            zero = class_logits.sum() * 0 + box_regression.sum() * 0
            return zero, zero.clone()
        loss_classifier = F.cross_entropy(class_logits, labels)

        pos = torch.where(labels > 0)[0]
        # Foreground deltas: class-agnostic heads keep the object in class column 1.
        cls_col = torch.ones_like(labels[pos]) if self.cls_agnostic_bbox_reg else labels[pos]
        deltas = box_regression.reshape(box_regression.shape[0], -1, 4)[pos, cls_col]
        if self.loss_type == "giou":
            boxes = cat([p.bbox for p in proposals], dim=0)[pos]
            # The ground truth decoded from its encoding, rather than carried in a field: the
            # same numbers up to rounding, and sampled proposals keep only the fields they had.
            box_loss = generalized_box_iou_loss(
                self.box_coder.decode(deltas, boxes), self.box_coder.decode(targets[pos], boxes), reduction="sum"
            )
        else:
            box_loss = smooth_l1_loss(deltas, targets[pos], beta=self.smooth_l1_beta, size_average=False)
        # Divided by all sampled proposals, not only positives (torchvision and maskrcnn-benchmark).
        return loss_classifier, self.loss_weight * box_loss / labels.numel()


def make_roi_box_loss_evaluator(cfg: CfgNode) -> FastRCNNLossComputation:
    """FastRCNNLossComputation from MODEL.ROI_HEADS, MODEL.CLS_AGNOSTIC_BBOX_REG and the box loss
    keys of MODEL.ROI_BOX_HEAD."""
    heads = cfg.MODEL.ROI_HEADS
    return FastRCNNLossComputation(
        Matcher(heads.FG_IOU_THRESHOLD, heads.BG_IOU_THRESHOLD, allow_low_quality_matches=False),
        BalancedPositiveNegativeSampler(heads.BATCH_SIZE_PER_IMAGE, heads.POSITIVE_FRACTION),
        BoxCoder(weights=tuple(heads.BBOX_REG_WEIGHTS)),
        add_gt_proposals=heads.ADD_GT_PROPOSALS,
        cls_agnostic_bbox_reg=cfg.MODEL.CLS_AGNOSTIC_BBOX_REG,
        smooth_l1_beta=cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA,
        loss_type=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE,
        loss_weight=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT,
    )
