"""RPN loss: objectness (binary cross-entropy) and box regression (smooth L1) on sampled anchors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode

from detbench.layers import smooth_l1_loss
from detbench.structures import BoxList, box_iou

from ..balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from ..box_coder import BoxCoder
from ..matcher import Matcher
from ..utils import cat
from .inference import concat_box_prediction_layers


class RPNLossComputation:
    """Labels each anchor from its IoU with the ground truth, samples a balanced subset per
    image, and returns ``(loss_objectness, loss_rpn_box_reg)``.

    * An anchor is positive (1) when ``proposal_matcher`` matches it to a ground-truth box,
      negative (0) below the low threshold, ignored (-1) between the thresholds or when it is
      not visible (outside the image, see AnchorGenerator's ``straddle_thresh``).
    * An image without ground truth has only negatives (besides invisible anchors).
    * loss_objectness: BCE with logits, averaged over the sampled anchors.
    * loss_rpn_box_reg: smooth L1 (``smooth_l1_beta``) between the predicted deltas of the
      sampled positives and ``box_coder.encode(gt, anchor)``, summed, then divided by the
      number of sampled anchors (positives and negatives), as torchvision does.

    Both losses stay finite and connected to the graph when nothing is positive or sampled.
    """

    def __init__(
        self,
        proposal_matcher: Matcher,
        fg_bg_sampler: BalancedPositiveNegativeSampler,
        box_coder: BoxCoder,
        smooth_l1_beta: float = 1.0 / 9,
    ) -> None:
        self.proposal_matcher = proposal_matcher
        self.fg_bg_sampler = fg_bg_sampler
        self.box_coder = box_coder
        self.smooth_l1_beta = smooth_l1_beta

    def prepare_targets(self, anchors: list[BoxList], targets: list[BoxList]) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: labels [A] (float 1 / 0 / -1) and matched gt index [A] (int64, -1 / -2 when unmatched)."""
        labels, matches = [], []
        for anchors_per_image, targets_per_image in zip(anchors, targets):
            gt = targets_per_image.convert("xyxy").bbox
            boxes = anchors_per_image.bbox
            # [M_gt, A] IoU; M_gt = 0 makes every anchor BELOW_LOW_THRESHOLD, i.e. negative.
            matched = self.proposal_matcher(box_iou(gt.to(boxes.dtype), boxes))
            labels_per_image = (matched >= 0).to(torch.float32)
            labels_per_image[matched == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels_per_image[~anchors_per_image.get_field("visibility")] = -1.0
            labels.append(labels_per_image)
            matches.append(matched)
        return labels, matches

    def __call__(
        self,
        anchors: list[list[BoxList]],
        objectness: list[Tensor],
        box_regression: list[Tensor],
        targets: list[BoxList],
    ) -> tuple[Tensor, Tensor]:
        """``anchors``: per image, per level BoxLists with "visibility"; ``objectness``
        [N, A, H, W] and ``box_regression`` [N, 4A, H, W] per level; ``targets``: per image
        BoxList of ground-truth boxes. Returns two scalar tensors."""
        if len(targets) != len(anchors):
            raise ValueError(f"RPN loss: {len(targets)} targets for {len(anchors)} images")
        anchors = [_cat_levels(per_image) for per_image in anchors]
        labels, matches = self.prepare_targets(anchors, targets)
        pos_masks, neg_masks = self.fg_bg_sampler(labels)

        obj, deltas = concat_box_prediction_layers(objectness, box_regression)
        obj, deltas = obj.reshape(-1), deltas.reshape(-1, 4)  # image-major, like torch.cat(labels)
        sampled_pos = torch.where(torch.cat(pos_masks))[0]
        sampled = torch.cat([sampled_pos, torch.where(torch.cat(neg_masks))[0]])

        # Regression targets only for the sampled positives, image by image (ascending order,
        # the order of sampled_pos).
        reg_targets = cat(
            [
                self.box_coder.encode(t.convert("xyxy").bbox[m[p]].to(a.bbox.dtype), a.bbox[p])
                for a, t, m, p in zip(anchors, targets, matches, pos_masks)
            ]
        )
        num_sampled = max(sampled.numel(), 1)  # avoids 0 / 0 when no anchor is sampled at all
        box_loss = (
            smooth_l1_loss(deltas[sampled_pos], reg_targets.to(deltas.dtype), self.smooth_l1_beta, size_average=False)
            / num_sampled
        )
        if sampled.numel() == 0:
            objectness_loss = obj.sum() * 0.0  # zero, but still part of the graph
        else:
            sampled_labels = torch.cat(labels)[sampled].to(obj.dtype)
            objectness_loss = F.binary_cross_entropy_with_logits(obj[sampled], sampled_labels)
        return objectness_loss, box_loss


def _cat_levels(boxlists: list[BoxList]) -> BoxList:
    """One BoxList with the anchors of all levels of an image (bbox and "visibility")."""
    if len(boxlists) == 1:
        return boxlists[0]
    out = BoxList(cat([b.bbox for b in boxlists]), boxlists[0].size, mode="xyxy")
    out.add_field("visibility", cat([b.get_field("visibility") for b in boxlists]))
    return out


def build_rpn_loss(cfg: CfgNode, box_coder: BoxCoder) -> RPNLossComputation:
    """RPNLossComputation from MODEL.RPN (matcher with low-quality matches, as in the RPN papers)."""
    rpn = cfg.MODEL.RPN
    return RPNLossComputation(
        proposal_matcher=Matcher(rpn.FG_IOU_THRESHOLD, rpn.BG_IOU_THRESHOLD, allow_low_quality_matches=True),
        fg_bg_sampler=BalancedPositiveNegativeSampler(rpn.BATCH_SIZE_PER_IMAGE, rpn.POSITIVE_FRACTION),
        box_coder=box_coder,
        smooth_l1_beta=rpn.SMOOTH_L1_BETA,
    )


make_rpn_loss_evaluator = build_rpn_loss  # maskrcnn-benchmark's name for it
