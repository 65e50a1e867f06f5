"""The RoI mask head: feature extractor + predictor, with the mask loss or test-time masks."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.structures.bounding_box import BoxList

from .inference import Masker, MaskPostProcessor
from .loss import mask_rcnn_loss
from .roi_mask_feature_extractors import build_roi_mask_feature_extractor
from .roi_mask_predictors import build_roi_mask_predictor


def select_proposals(
    proposals: Sequence[BoxList], keep: Sequence[Tensor] | None = None
) -> tuple[list[BoxList], Tensor]:
    """The positive proposals (field "labels" > 0) of each image, restricted to ``keep[i]``
    (bool [K_i]) when given.

    Returns (per-image selected BoxLists, bool [sum K_i] mask over the concatenated proposals).
    """
    masks = [boxes.get_field("labels") > 0 for boxes in proposals]
    if keep is not None:
        masks = [m & k for m, k in zip(masks, keep)]
    return [boxes[m] for boxes, m in zip(proposals, masks)], torch.cat(masks)


def head_features(
    extractor: nn.Module,
    features: Sequence[Tensor],
    proposals: Sequence[BoxList],
    box_features: Tensor | None,
    rows: Tensor,
) -> Tensor:
    """The extractor's output for ``proposals``, or else the ``rows`` (bool [sum K_i]) of
    ``box_features``, the box head's features of all proposals (when the extractor is shared)."""
    if box_features is not None:
        return box_features[rows]
    return extractor(features, proposals)


class ROIMaskHead(nn.Module):
    """Mask branch of Mask R-CNN.

    Training: runs on the positive proposals of the box head's sample (field "labels" > 0,
    with "matched_idxs"), returns the proposals it was given unchanged and the loss
    "loss_mask". Testing: runs on the detections and returns them with a "mask" field
    ([K, 1, M, M] probabilities of the detection's class, or pasted masks, see
    :class:`MaskPostProcessor`). ``x`` is the extractor output for the RoIs it ran on.
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        predictor: nn.Module,
        post_processor: MaskPostProcessor,
        target_threshold: float | None = None,
    ) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.predictor = predictor
        self.post_processor = post_processor
        self.target_threshold = target_threshold

    @property
    def aligned(self) -> bool:
        """MODEL.ROI_MASK_HEAD.ALIGNED_MASKS: the pixel model of the targets, the post-processor's."""
        return self.post_processor.aligned

    def forward(
        self,
        features: Sequence[Tensor],
        proposals: Sequence[BoxList],
        targets: Sequence[BoxList] | None = None,
        box_features: Tensor | None = None,
    ) -> tuple[Tensor, list[BoxList], dict[str, Tensor]]:
        """features: per level [N, C, H, W]; proposals / targets: one BoxList per image;
        box_features: [sum K_i, ...] box-head features of ``proposals`` (training only).

        Returns (x [K, C', h, w], proposals or detections with "mask", losses).
        """
        if not self.training:
            x = self.feature_extractor(features, proposals)
            return x, self.post_processor(self.predictor(x), proposals), {}
        if targets is None:
            raise ValueError("ROIMaskHead in training mode needs targets")
        positives, rows = select_proposals(proposals)
        x = head_features(self.feature_extractor, features, positives, box_features, rows)
        loss = mask_rcnn_loss(self.predictor(x), positives, targets, self.target_threshold, self.aligned)
        return x, list(proposals), {"loss_mask": loss}


def build_roi_mask_head(cfg: CfgNode, in_channels: int) -> ROIMaskHead:
    """The mask head of MODEL.ROI_MASK_HEAD for features of ``in_channels`` channels."""
    node = cfg.MODEL.ROI_MASK_HEAD
    feature_extractor = build_roi_mask_feature_extractor(cfg, in_channels)
    aligned = node.ALIGNED_MASKS
    masker = Masker(node.POSTPROCESS_MASKS_THRESHOLD, padding=1, aligned=aligned) if node.POSTPROCESS_MASKS else None
    return ROIMaskHead(
        feature_extractor,
        build_roi_mask_predictor(cfg, feature_extractor.out_channels),
        MaskPostProcessor(masker, aligned=aligned),
    )
