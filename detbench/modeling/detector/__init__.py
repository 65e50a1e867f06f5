"""Detectors and their builder."""

from .detectors import META_ARCHITECTURES, build_detection_model
from .generalized_rcnn import GeneralizedRCNN

__all__ = ["META_ARCHITECTURES", "GeneralizedRCNN", "build_detection_model"]
