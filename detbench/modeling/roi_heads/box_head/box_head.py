"""The RoI box head: feature extractor + predictor, with training losses or test-time detections."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.structures.bounding_box import BoxList

from .inference import PostProcessor, make_roi_box_post_processor
from .loss import FastRCNNLossComputation, make_roi_box_loss_evaluator
from .roi_box_feature_extractors import build_roi_box_feature_extractor
from .roi_box_predictors import build_roi_box_predictor


class ROIBoxHead(nn.Module):
    """Fast R-CNN head on top of the proposals.

    Training: samples the proposals against the targets, then scores the sample
    (losses "loss_classifier", "loss_box_reg"); the returned BoxLists are the sampled
    proposals with "labels", "regression_targets" and "matched_idxs".
    Testing: returns the detections ("scores", "labels") of every image.
    In both cases ``x`` is the extractor's output for the proposals it ran on.
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        predictor: nn.Module,
        post_processor: PostProcessor,
        loss_evaluator: FastRCNNLossComputation,
    ) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.predictor = predictor
        self.post_processor = post_processor
        self.loss_evaluator = loss_evaluator

    def forward(
        self,
        features: Sequence[Tensor],
        proposals: Sequence[BoxList],
        targets: Sequence[BoxList] | None = None,
    ) -> tuple[Tensor, list[BoxList], dict[str, Tensor]]:
        """features: per level [N, C, H, W]; proposals / targets: one BoxList per image.

        Returns (x [K, ...], sampled proposals or detections, losses).
        """
        if self.training:
            if targets is None:
                raise ValueError("ROIBoxHead in training mode needs targets")
            proposals = self.loss_evaluator.subsample(proposals, targets)
        x = self.feature_extractor(features, proposals)
        class_logits, box_regression = self.predictor(x)
        if not self.training:
            return x, self.post_processor(class_logits, box_regression, proposals), {}
        loss_classifier, loss_box_reg = self.loss_evaluator(class_logits, box_regression, proposals)
        return x, list(proposals), {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}


def build_roi_box_head(cfg: CfgNode, in_channels: int) -> ROIBoxHead:
    """The box head of MODEL.ROI_BOX_HEAD / MODEL.ROI_HEADS for features of ``in_channels``."""
    feature_extractor = build_roi_box_feature_extractor(cfg, in_channels)
    return ROIBoxHead(
        feature_extractor,
        build_roi_box_predictor(cfg, feature_extractor.out_channels),
        make_roi_box_post_processor(cfg),
        make_roi_box_loss_evaluator(cfg),
    )
