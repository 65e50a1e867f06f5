"""Evaluation of a model's predictions on a test dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..voc import PascalVOCDataset
from .coco import Predictions, do_coco_evaluation
from .voc import do_voc_evaluation


def evaluate(
    dataset: Any,
    predictions: Predictions,
    output_folder: str | Path | None = None,
    iou_types: Sequence[str] = ("bbox",),
    masks_pasted: bool = False,
    masks_aligned: bool = False,
) -> dict[str, dict[str, float]]:
    """Evaluate ``predictions`` (a list in dataset order, or {dataset index: BoxList}) on
    ``dataset``; returns {iou_type: {metric: value}}.

    A Pascal VOC devkit dataset gets the VOC metric (:mod:`.voc`: {"bbox": {"mAP": ...,
    "per_category": {name: AP}}}, 11-point or area as TEST.VOC_METRIC says). Every dataset with
    COCO ground truth (a ``coco`` attribute and the attributes listed in :mod:`.coco.coco_eval`;
    COCO json, Penn-Fudan, raw Cityscapes) is evaluated with pycocotools. ``masks_pasted``: the
    predictions' masks are already pasted into the image (ROI_MASK_HEAD.POSTPROCESS_MASKS);
    ``masks_aligned``: box-relative masks are pasted with detectron2's pixel model
    (ROI_MASK_HEAD.ALIGNED_MASKS, the one the model was trained with).
    """
    if isinstance(dataset, PascalVOCDataset):
        return do_voc_evaluation(dataset, predictions, output_folder, iou_types)
    if hasattr(dataset, "coco"):
        return do_coco_evaluation(dataset, predictions, output_folder, iou_types, masks_pasted, masks_aligned)
    raise NotImplementedError(
        f"no evaluation for {type(dataset).__name__}: it has no COCO ground truth ('coco' attribute)"
    )
