"""The Pascal VOC detection metric, as the VOC devkit computes it.

Per class, the detections of all images are ranked by score (highest first; ties keep
dataset order). Each detection is compared with the ground truth boxes of its class in its
image; the one of largest IoU is its match when that IoU is >= ``iou_thresh`` (0.5):

* a match marked difficult makes the detection neither a true nor a false positive (ignored);
* a match not yet taken by a higher-ranked detection makes it a true positive, and takes it;
* otherwise (no match, or a match already taken) it is a false positive.

Recall = TP / (non-difficult ground truth), precision = TP / (TP + FP) after each ranked
detection. AP is then either the VOC2007 "11point" metric, the mean over recall thresholds
t = 0, 0.1, ..., 1 of the highest precision at recall >= t (0 where recall never reaches t),
or the "area" metric of VOC2010 and later, the area under the precision-recall curve made
monotone (precision at recall r = the highest precision at any recall >= r). A class without
non-difficult ground truth has AP NaN and is left out of the mean (mAP).

IoU uses detbench's continuous boxes; with VOC's boxes mapped as
:mod:`detbench.data.datasets.voc` states, it equals the devkit's "+1" IoU on integer boxes.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from detbench.structures.bounding_box import BoxList
from detbench.structures.boxlist_ops import box_iou

from ..coco.coco_eval import _write_json as write_json
from ..coco.results_table import per_category_table

logger = logging.getLogger(__name__)

IGNORED, FALSE_POSITIVE, TRUE_POSITIVE = -1, 0, 1


def match_detections(
    boxes: torch.Tensor, scores: torch.Tensor, gt_boxes: torch.Tensor, gt_difficult: torch.Tensor,
    iou_thresh: float = 0.5,
) -> np.ndarray:
    """Outcome of each of one image's detections of one class ([D] int8: TRUE_POSITIVE,
    FALSE_POSITIVE or IGNORED), from [D, 4] boxes, [D] scores, [G, 4] ground truth boxes and
    [G] bool difficult flags, greedily in decreasing score order (see the module doc)."""
    outcome = np.full(len(boxes), FALSE_POSITIVE, dtype=np.int8)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return outcome
    iou = box_iou(boxes.double(), gt_boxes.double())  # [D, G]
    best_iou, best = iou.max(dim=1)
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    for d in torch.argsort(-scores, stable=True).tolist():
        if best_iou[d] < iou_thresh:
            continue
        g = int(best[d])
        if gt_difficult[g]:
            outcome[d] = IGNORED
        elif not taken[g]:
            outcome[d], taken[g] = TRUE_POSITIVE, True
    return outcome


def average_precision(precision: np.ndarray, recall: np.ndarray, metric: str) -> float:
    """AP of one class from its precision and recall after each ranked detection ("11point"
    or "area", see the module doc)."""
    if metric == "11point":
        return float(np.mean([precision[recall >= t].max(initial=0.0) for t in np.linspace(0.0, 1.0, 11)]))
    if metric != "area":
        raise ValueError(f"unknown VOC metric {metric!r}; expected '11point' or 'area'")
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # highest precision at any larger recall
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _class_curve(scores: list[np.ndarray], outcomes: list[np.ndarray], positives: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each ranked, non-ignored detection of one class."""
    score = np.concatenate(scores) if scores else np.zeros(0)
    outcome = np.concatenate(outcomes) if outcomes else np.zeros(0, dtype=np.int8)
    outcome = outcome[np.argsort(-score, kind="stable")]
    outcome = outcome[outcome != IGNORED]
    tp = np.cumsum(outcome == TRUE_POSITIVE)
    fp = np.cumsum(outcome == FALSE_POSITIVE)
    return tp / np.maximum(tp + fp, 1), tp / positives


def eval_detection_voc(
    predictions: Sequence[BoxList], ground_truth: Sequence[BoxList], class_names: dict[int, str],
    metric: str = "area", iou_thresh: float = 0.5,
) -> dict[str, Any]:
    """{"mAP": float, "per_category": {name: AP}} of ``predictions`` (BoxLists with "labels"
    and "scores") against ``ground_truth`` (BoxLists with "labels" and optionally
    "difficult"), image by image in the same size; ``class_names`` maps label -> name."""
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} ground truth images")
    scores = {c: [] for c in class_names}
    outcomes = {c: [] for c in class_names}
    positives = dict.fromkeys(class_names, 0)
    for prediction, truth in zip(predictions, ground_truth):
        labels, gt_labels = prediction.get_field("labels"), truth.get_field("labels")
        difficult = truth.get_field("difficult") if truth.has_field("difficult") else torch.zeros_like(gt_labels,
                                                                                                      dtype=torch.bool)
        for c in class_names:
            mine, theirs = labels == c, gt_labels == c
            positives[c] += int((theirs & ~difficult).sum())
            pred_scores = prediction.get_field("scores")[mine]
            scores[c].append(pred_scores.double().numpy())
            outcomes[c].append(match_detections(prediction.bbox[mine], pred_scores, truth.bbox[theirs],
                                                difficult[theirs], iou_thresh))
    per_category = {}
    for c, name in class_names.items():
        if positives[c] == 0:
            per_category[name] = math.nan
            continue
        precision, recall = _class_curve(scores[c], outcomes[c], positives[c])
        per_category[name] = average_precision(precision, recall, metric)
    valid = [ap for ap in per_category.values() if not math.isnan(ap)]
    return {"mAP": float(np.mean(valid)) if valid else math.nan, "per_category": per_category}


def do_voc_evaluation(
    dataset: Any, predictions: Any, output_folder: str | Path | None = None, iou_types: Sequence[str] = ("bbox",),
) -> dict[str, dict[str, Any]]:
    """VOC evaluation of ``predictions`` (a list in dataset order or {index: BoxList}; an image
    without one has no detections) on a :class:`~detbench.data.datasets.voc.PascalVOCDataset`
    with its ``voc_metric``; returns {"bbox": {"mAP", "per_category"}} and writes it, with the
    metric's name, to ``output_folder/voc_results.json``. VOC has boxes only: other iou types
    are skipped with a warning."""
    skipped = [t for t in iou_types if t != "bbox"]
    if skipped:
        logger.warning("Pascal VOC has box ground truth only: %s not evaluated", ", ".join(skipped))
    given = predictions if isinstance(predictions, Mapping) else dict(enumerate(predictions))
    preds, truths = [], []
    for index in range(len(dataset)):
        truth = dataset.get_groundtruth(index)
        prediction = given.get(index)
        if prediction is None:
            prediction = BoxList(torch.zeros((0, 4)), truth.size)
            prediction.add_field("labels", torch.zeros(0, dtype=torch.int64))
            prediction.add_field("scores", torch.zeros(0))
        preds.append(prediction if tuple(prediction.size) == truth.size else prediction.resize(truth.size))
        truths.append(truth)
    result = eval_detection_voc(preds, truths, dataset.categories, dataset.voc_metric)
    logger.info("Pascal VOC %s mAP (IoU 0.5, %d images): %.4f\n%s", dataset.voc_metric, len(dataset),
                result["mAP"], per_category_table(result["per_category"]))
    if output_folder:
        Path(output_folder).mkdir(parents=True, exist_ok=True)
        write_json(Path(output_folder) / "voc_results.json", {"bbox": {**result, "metric": dataset.voc_metric}})
    return {"bbox": result}
