"""Evaluation of a model's predictions on a test dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .coco import Predictions, do_coco_evaluation


def evaluate(
    dataset: Any,
    predictions: Predictions,
    output_folder: str | Path | None = None,
    iou_types: Sequence[str] = ("bbox",),
    masks_pasted: bool = False,
) -> dict[str, dict[str, float]]:
    """Evaluate ``predictions`` (a list in dataset order, or {dataset index: BoxList}) on
    ``dataset``; returns {iou_type: {metric: value}}.

    Every dataset with COCO ground truth (a ``coco`` attribute and the attributes listed in
    :mod:`.coco.coco_eval`) is evaluated with pycocotools. ``masks_pasted``: the predictions'
    masks are already pasted into the image (ROI_MASK_HEAD.POSTPROCESS_MASKS).
    """
    if hasattr(dataset, "coco"):
        return do_coco_evaluation(dataset, predictions, output_folder, iou_types, masks_pasted)
    raise NotImplementedError(
        f"no evaluation for {type(dataset).__name__}: it has no COCO ground truth ('coco' attribute)"
    )
