"""COCO-style evaluation (bbox, segm, keypoints) with pycocotools."""

from .coco_eval import (
    IOU_TYPES,
    METRICS,
    Predictions,
    do_coco_evaluation,
    encode_masks,
    evaluate_predictions_on_coco,
    prepare_for_coco_detection,
    prepare_for_coco_keypoint,
    prepare_for_coco_segmentation,
)

__all__ = [
    "IOU_TYPES",
    "Predictions",
    "METRICS",
    "do_coco_evaluation",
    "encode_masks",
    "evaluate_predictions_on_coco",
    "prepare_for_coco_detection",
    "prepare_for_coco_keypoint",
    "prepare_for_coco_segmentation",
]
