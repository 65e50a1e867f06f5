"""The RoI keypoint head: feature extractor + predictor, with the keypoint loss or test-time keypoints."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.structures.bounding_box import BoxList

from ..mask_head.mask_head import head_features, select_proposals
from .inference import KeypointPostProcessor
from .loss import keypoint_rcnn_loss
from .roi_keypoint_feature_extractors import build_roi_keypoint_feature_extractor
from .roi_keypoint_predictors import build_roi_keypoint_predictor


def _has_visible_keypoint(proposals: BoxList, targets: BoxList) -> Tensor:
    """bool [K]: whether each proposal's matched ground truth has a keypoint with visibility > 0."""
    visible = (targets.get_field("keypoints").keypoints[..., 2] > 0).any(dim=1)  # [G]
    matched = proposals.get_field("matched_idxs")
    if visible.numel() == 0:  # no ground truth: background proposals point at index 0 anyway
        return torch.zeros_like(matched, dtype=torch.bool)
    return visible.to(matched.device)[matched]


class ROIKeypointHead(nn.Module):
    """Keypoint branch of Keypoint R-CNN.

    Training: runs on the positive proposals of the box head's sample (field "labels" > 0,
    with "matched_idxs") whose ground truth has at least one labelled keypoint; returns the
    proposals it was given unchanged and the loss "loss_kp". Proposals without a usable
    keypoint would add no term to the loss, so dropping them changes only the work done.
    Testing: runs on the detections and adds "keypoints" and "keypoints_scores".
    """

    def __init__(
        self, feature_extractor: nn.Module, predictor: nn.Module, post_processor: KeypointPostProcessor
    ) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.predictor = predictor
        self.post_processor = post_processor

    def forward(
        self,
        features: Sequence[Tensor],
        proposals: Sequence[BoxList],
        targets: Sequence[BoxList] | None = None,
        box_features: Tensor | None = None,
    ) -> tuple[Tensor, list[BoxList], dict[str, Tensor]]:
        """features: per level [N, C, H, W]; proposals / targets: one BoxList per image;
        box_features: [sum K_i, ...] box-head features of ``proposals`` (training only).

        Returns (x [K, C', h, w], proposals or detections with keypoints, losses).
        """
        if not self.training:
            x = self.feature_extractor(features, proposals)
            return x, self.post_processor(self.predictor(x), proposals), {}
        if targets is None:
            raise ValueError("ROIKeypointHead in training mode needs targets")
        keep = [_has_visible_keypoint(p, t) for p, t in zip(proposals, targets)]
        positives, rows = select_proposals(proposals, keep)
        x = head_features(self.feature_extractor, features, positives, box_features, rows)
        loss = keypoint_rcnn_loss(self.predictor(x), positives, targets)
        return x, list(proposals), {"loss_kp": loss}


def build_roi_keypoint_head(cfg: CfgNode, in_channels: int) -> ROIKeypointHead:
    """The keypoint head of MODEL.ROI_KEYPOINT_HEAD for features of ``in_channels`` channels."""
    feature_extractor = build_roi_keypoint_feature_extractor(cfg, in_channels)
    return ROIKeypointHead(
        feature_extractor,
        build_roi_keypoint_predictor(cfg, feature_extractor.out_channels),
        KeypointPostProcessor(),
    )
