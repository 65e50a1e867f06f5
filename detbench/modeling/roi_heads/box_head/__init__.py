"""The RoI box head (Fast R-CNN): feature extractors, predictors, loss and post-processing."""

from .box_head import ROIBoxHead, build_roi_box_head
from .inference import PostProcessor
from .loss import FastRCNNLossComputation
from .roi_box_feature_extractors import ROI_BOX_FEATURE_EXTRACTORS, make_roi_box_feature_extractor
from .roi_box_predictors import ROI_BOX_PREDICTOR, make_roi_box_predictor

__all__ = [
    "FastRCNNLossComputation",
    "PostProcessor",
    "ROIBoxHead",
    "ROI_BOX_FEATURE_EXTRACTORS",
    "ROI_BOX_PREDICTOR",
    "build_roi_box_head",
    "make_roi_box_feature_extractor",
    "make_roi_box_predictor",
]
