"""The Mask R-CNN mask head: extractors, predictor, loss, post-processing and mask pasting."""

from .inference import Masker, MaskPostProcessor, paste_masks_in_image
from .loss import mask_rcnn_loss, project_masks_on_boxes
from .mask_head import ROIMaskHead, build_roi_mask_head
from .roi_mask_feature_extractors import ROI_MASK_FEATURE_EXTRACTORS, ConvFeatureExtractor, make_roi_mask_feature_extractor
from .roi_mask_predictors import ROI_MASK_PREDICTOR, MaskRCNNC4Predictor, make_roi_mask_predictor

__all__ = [
    "ROI_MASK_FEATURE_EXTRACTORS",
    "ROI_MASK_PREDICTOR",
    "ConvFeatureExtractor",
    "MaskPostProcessor",
    "MaskRCNNC4Predictor",
    "Masker",
    "ROIMaskHead",
    "build_roi_mask_head",
    "make_roi_mask_feature_extractor",
    "make_roi_mask_predictor",
    "mask_rcnn_loss",
    "paste_masks_in_image",
    "project_masks_on_boxes",
]
