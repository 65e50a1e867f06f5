"""The Keypoint R-CNN head: extractor, predictor, heatmap loss and keypoint decoding."""

from .inference import KeypointPostProcessor, heatmaps_to_keypoints
from .keypoint_head import ROIKeypointHead, build_roi_keypoint_head
from .loss import keypoint_rcnn_loss, keypoints_to_heatmap
from .roi_keypoint_feature_extractors import ROI_KEYPOINT_FEATURE_EXTRACTORS, make_roi_keypoint_feature_extractor
from .roi_keypoint_predictors import ROI_KEYPOINT_PREDICTOR, KeypointRCNNPredictor, make_roi_keypoint_predictor

__all__ = [
    "ROI_KEYPOINT_FEATURE_EXTRACTORS",
    "ROI_KEYPOINT_PREDICTOR",
    "KeypointPostProcessor",
    "KeypointRCNNPredictor",
    "ROIKeypointHead",
    "build_roi_keypoint_head",
    "heatmaps_to_keypoints",
    "keypoint_rcnn_loss",
    "keypoints_to_heatmap",
    "make_roi_keypoint_feature_extractor",
    "make_roi_keypoint_predictor",
]
