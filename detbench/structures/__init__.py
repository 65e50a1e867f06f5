"""Data structures shared by the whole pipeline: BoxList (the boxes of one image and their
per-box fields, with the box geometry conventions), the operations on BoxLists, and
ImageList (a padded image batch)."""

from .bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM, BoxList
from .boxlist_ops import (
    box_area,
    box_iou,
    boxlist_iou,
    boxlist_nms,
    cat_boxlist,
    remove_small_boxes,
)
from .image_list import ImageList, to_image_list
from .keypoint import Keypoints, PersonKeypoints
from .segmentation_mask import SegmentationMask

__all__ = [
    "FLIP_LEFT_RIGHT",
    "FLIP_TOP_BOTTOM",
    "BoxList",
    "ImageList",
    "Keypoints",
    "PersonKeypoints",
    "SegmentationMask",
    "box_area",
    "box_iou",
    "boxlist_iou",
    "boxlist_nms",
    "cat_boxlist",
    "remove_small_boxes",
    "to_image_list",
]
