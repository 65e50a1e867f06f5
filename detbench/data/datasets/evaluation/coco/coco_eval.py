"""COCO evaluation of detections with pycocotools: predictions -> COCO result dicts -> COCOeval.

The dataset must offer what :class:`detbench.data.datasets.coco.COCODataset` offers: ``coco``
(the ground truth as a pycocotools ``COCO``), ``ids`` (json image id of each dataset index),
``contiguous_category_id_to_json_id``, ``categories`` ({contiguous id: name}) and
``get_img_info(i)`` with the original "width" and "height".

Predictions are BoxLists with "scores" and "labels" (contiguous ids), optionally "mask"
([K, 1, M, M] probabilities inside each box, or with ``masks_pasted`` masks the model already
pasted into its input image, [K, 1, h, w]: ROI_MASK_HEAD.POSTPROCESS_MASKS) and "keypoints" (a Keypoints object, with
"keypoints_scores" [K, P] optional), given either as a list (position = dataset index) or as
a mapping {dataset index: BoxList}. Their size may be the network input size: every prepare
function first resizes them to the original image size.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detbench.structures.bounding_box import BoxList
from detbench.structures.mask_ops import Masker, full_size_masks

from .results_table import per_category_ap, per_category_table

logger = logging.getLogger(__name__)

Predictions = Sequence[BoxList] | Mapping[int, BoxList]

IOU_TYPES = ("bbox", "segm", "keypoints")
# The metrics COCOeval.stats holds at its first positions, per iou type (keypoints have no
# small-object range: COCO labels no keypoints on small people).
METRICS = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "segm": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl"),
}


def _items(predictions: Predictions) -> Iterator[tuple[int, BoxList]]:
    """(dataset index, BoxList) pairs, for a list or a mapping of predictions."""
    if isinstance(predictions, Mapping):
        return iter(sorted(predictions.items()))
    return iter(enumerate(predictions))


def _original_size(dataset: Any, index: int, prediction: BoxList) -> BoxList:
    """``prediction`` resized to the original size of image ``index`` (a no-op if already there)."""
    info = dataset.get_img_info(index)
    size = (int(info["width"]), int(info["height"]))
    return prediction if tuple(prediction.size) == size else prediction.resize(size)


def _common(dataset: Any, index: int, prediction: BoxList) -> tuple[int, list[int], list[float]]:
    """json image id, json category ids and scores of one image's detections."""
    labels = prediction.get_field("labels").tolist()
    categories = [dataset.contiguous_category_id_to_json_id[label] for label in labels]
    return dataset.ids[index], categories, prediction.get_field("scores").tolist()


def prepare_for_coco_detection(predictions: Predictions, dataset: Any) -> list[dict]:
    """COCO bbox results: {"image_id", "category_id", "bbox": [x, y, w, h], "score"} in
    original image pixels."""
    results = []
    for index, prediction in _items(predictions):
        if len(prediction) == 0:
            continue
        prediction = _original_size(dataset, index, prediction).convert("xywh")
        image_id, categories, scores = _common(dataset, index, prediction)
        boxes = prediction.bbox.tolist()
        results.extend(
            {"image_id": image_id, "category_id": c, "bbox": b, "score": s}
            for c, b, s in zip(categories, boxes, scores)
        )
    return results


def encode_masks(masks: np.ndarray) -> list[dict]:
    """Binary masks [K, H, W] -> COCO RLEs with ``counts`` as str (JSON-serialisable)."""
    # pycocotools encodes column-major [H, W, K] uint8 arrays.
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def prepare_for_coco_segmentation(predictions: Predictions, dataset: Any, masker: Masker | None = None,
                                  pasted: bool = False) -> list[dict]:
    """COCO segm results: each [M, M] mask probability map pasted into the original image
    (``Masker(threshold=0.5, padding=1)`` unless given), thresholded and RLE-encoded.

    ``pasted``: the masks are already in image coordinates (the model pasted them at its input
    size); they are only resized to the original image (nearest for bool masks, bilinear for
    probabilities) and thresholded at 0.5, never pasted a second time.
    """
    masker = masker or Masker(threshold=0.5, padding=1)
    results = []
    for index, prediction in _items(predictions):
        if len(prediction) == 0:
            continue
        prediction = _original_size(dataset, index, prediction)
        masks = prediction.get_field("mask").cpu()
        if pasted:
            full = full_size_masks(masks, prediction, pasted=True) > 0.5  # [K, 1, H, W] bool
        else:
            full = masker(masks, prediction)  # [K, 1, H, W] bool
        rles = encode_masks(full[:, 0].numpy())
        image_id, categories, scores = _common(dataset, index, prediction)
        results.extend(
            {"image_id": image_id, "category_id": c, "segmentation": r, "score": s}
            for c, r, s in zip(categories, rles, scores)
        )
    return results


def prepare_for_coco_keypoint(predictions: Predictions, dataset: Any) -> list[dict]:
    """COCO keypoint results: "keypoints" as flat [x1, y1, s1, x2, ...] in original pixels,
    s = the keypoint's heatmap score ("keypoints_scores"; the visibility column without it;
    COCOeval ignores it), and "score" the detection's box score."""
    results = []
    for index, prediction in _items(predictions):
        if len(prediction) == 0:
            continue
        prediction = _original_size(dataset, index, prediction)
        points = prediction.get_field("keypoints").keypoints.clone()  # [K, P, 3]
        if prediction.has_field("keypoints_scores"):
            points[..., 2] = prediction.get_field("keypoints_scores").to(points.dtype)
        image_id, categories, scores = _common(dataset, index, prediction)
        results.extend(
            {"image_id": image_id, "category_id": c, "keypoints": k, "score": s}
            for c, k, s in zip(categories, points.flatten(1).tolist(), scores)
        )
    return results


_PREPARE = {
    "bbox": prepare_for_coco_detection,
    "segm": prepare_for_coco_segmentation,
    "keypoints": prepare_for_coco_keypoint,
}


def evaluate_predictions_on_coco(
    coco_gt: COCO, coco_results: list[dict], iou_type: str, image_ids: Sequence[int] | None = None
) -> COCOeval:
    """Run COCOeval (evaluate, accumulate, summarize) on ``image_ids`` (default: all images of
    ``coco_gt``); an empty result list scores 0. The 12-line summary is logged."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_dt = coco_gt.loadRes(coco_results) if coco_results else COCO()
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()
    logger.info("COCO %s evaluation:\n%s", iou_type, summary.getvalue().rstrip())
    return coco_eval


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON; NaN floats (not valid JSON) become null."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return None if isinstance(value, float) and value != value else value

    with open(path, "w") as f:
        json.dump(clean(obj), f)


def do_coco_evaluation(
    dataset: Any,
    predictions: Predictions,
    output_folder: str | Path | None = None,
    iou_types: Sequence[str] = ("bbox",),
    masks_pasted: bool = False,
    masks_aligned: bool = False,
) -> dict[str, dict[str, float]]:
    """Evaluate ``predictions`` on ``dataset`` for each of ``iou_types``; ``masks_pasted``: the
    "mask" fields are already in image coordinates (see :func:`prepare_for_coco_segmentation`);
    ``masks_aligned``: box-relative ones are pasted with ``Masker(aligned=True)``.

    Returns {iou_type: {metric: value}} with the metrics of :data:`METRICS` as fractions in
    [0, 1] (-1 where COCO has no ground truth in that range). Writes ``<iou_type>.json`` (the
    COCO results) per type and ``coco_results.json`` (the returned metrics, each type with
    "per_category" {category name: AP} added, null without ground truth) in ``output_folder``
    when given.
    """
    unknown = [t for t in iou_types if t not in _PREPARE]
    if unknown:
        raise ValueError(f"unknown iou types {unknown}; expected some of {IOU_TYPES}")
    folder = Path(output_folder) if output_folder else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    per_category: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        logger.info("Preparing %s results", iou_type)
        if iou_type == "segm":
            masker = Masker(threshold=0.5, padding=1, aligned=masks_aligned)
            coco_results = prepare_for_coco_segmentation(predictions, dataset, masker, pasted=masks_pasted)
        else:
            coco_results = _PREPARE[iou_type](predictions, dataset)
        if folder is not None:
            _write_json(folder / f"{iou_type}.json", coco_results)
        coco_eval = evaluate_predictions_on_coco(dataset.coco, coco_results, iou_type, dataset.ids)
        metrics = {name: float(v) for name, v in zip(METRICS[iou_type], coco_eval.stats)}
        names = {json_id: dataset.categories[c] for c, json_id in dataset.contiguous_category_id_to_json_id.items()}
        per_category[iou_type] = per_category_ap(coco_eval, names)
        logger.info("Per-category %s AP:\n%s", iou_type, per_category_table(per_category[iou_type]))
        results[iou_type] = metrics
    if folder is not None:
        report = {t: {**m, "per_category": per_category[t]} for t, m in results.items()}
        _write_json(folder / "coco_results.json", report)
    return results
