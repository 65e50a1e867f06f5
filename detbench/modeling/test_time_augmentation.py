"""Test-time augmentation on the model side: one view's detections, the merge over views, and
mask probabilities averaged over views (tensors in, tensors out; no image decoding here).

A *view* is the image resized to some size and possibly mirrored left-right. All views of an
image are merged in the *reference frame*: the input size of the plain test view (INPUT.MIN /
MAX_SIZE_TEST, not mirrored), which is what the plain model returns its detections in. A box of
a view maps to the reference frame by un-mirroring it in the view (x -> W_view - x, see
:meth:`BoxList.transpose`) and scaling it by the size ratio; the inverse maps back.

Boxes: every view's detections (already score-filtered and NMS'ed by the box head) are mapped
to the reference frame and concatenated; per-class NMS at the box head's threshold and its
top-k then pick the final detections (maskrcnn-benchmark's union merge, with labels kept).

Masks (maskrcnn-benchmark merged boxes only): the *final* boxes are mapped into every view and
the mask head runs on that view's features; its probability for the detection's class is
mirrored back along the box's x axis for a mirrored view (an RoI in the mirrored image samples
the mirrored box, so column j of its M x M grid is column M - 1 - j of the original box) and
the probabilities are averaged over views before any pasting or thresholding. Averaging
probabilities (not logits) keeps a view that is confident about a pixel from being cancelled
by one view alone; every view weighs the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from detbench.layers.nms import batched_nms
from detbench.structures.bounding_box import FLIP_LEFT_RIGHT, BoxList
from detbench.structures.image_list import ImageList


@dataclass
class ViewOutput:
    """One view of a batch: its backbone features (per level [N, C, h, w]), its detections (one
    BoxList per image, in the view's own input size) and whether the view is mirrored."""

    features: list[Tensor]
    detections: list[BoxList]
    flipped: bool


def check_supported(model: nn.Module) -> None:
    """Raise ValueError, naming the keys, for models test-time augmentation cannot merge:
    keypoint heads (left/right keypoint swaps are not merged) and RPN-only models
    (proposals are not detections). R-CNN box and mask heads and RetinaNet are supported."""
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is not None and "keypoint" in roi_heads:
        raise ValueError("TEST.BBOX_AUG.ENABLED is not supported with MODEL.KEYPOINT_ON: keypoints are not "
                         "merged over augmented views; set TEST.BBOX_AUG.ENABLED False or MODEL.KEYPOINT_ON False")
    if roi_heads is None and not _is_retinanet(model):
        raise ValueError("TEST.BBOX_AUG.ENABLED needs detections: an RPN-only model (MODEL.RPN_ONLY True without "
                         "MODEL.RETINANET_ON) returns proposals, which are not merged")


def _is_retinanet(model: nn.Module) -> bool:
    from detbench.modeling.rpn.retinanet.retinanet import RetinaNetModule

    return isinstance(getattr(model, "rpn", None), RetinaNetModule)


def detect_view(model: nn.Module, images: ImageList, flipped: bool) -> ViewOutput:
    """Backbone, RPN and box head (or RetinaNet) of ``model`` (in eval mode) on one view's
    batch ``images`` ([N, 3, H, W] padded); no mask head yet."""
    features = model.backbone(images.tensors)
    proposals, _ = model.rpn(images, features, None)
    if model.roi_heads is None:  # RetinaNet: the "proposals" are the final detections
        return ViewOutput(list(features), list(proposals), flipped)
    _, detections, _ = model.roi_heads["box"](features, proposals)
    return ViewOutput(list(features), list(detections), flipped)


def to_reference(boxes: BoxList, flipped: bool, reference_size: tuple[int, int]) -> BoxList:
    """Boxes of a view (``boxes.size`` is the view's (W, H)) -> the reference frame of
    ``reference_size = (W, H)``: un-mirrored, then scaled. Fields are carried."""
    if flipped:
        boxes = boxes.transpose(FLIP_LEFT_RIGHT)
    return boxes.resize(reference_size)


def from_reference(boxes: BoxList, view_size: tuple[int, int], flipped: bool) -> BoxList:
    """The inverse of :func:`to_reference`: reference-frame boxes -> a view of ``view_size = (W, H)``."""
    boxes = boxes.resize(view_size)
    return boxes.transpose(FLIP_LEFT_RIGHT) if flipped else boxes


def merge_detections(detections: Sequence[BoxList], nms_threshold: float, detections_per_img: int) -> BoxList:
    """One image's detections of every view, all in the same frame (same ``size``), with
    "scores" and "labels" -> their union after per-class NMS at ``nms_threshold``, best
    ``detections_per_img`` first (sorted by score). Other fields are dropped."""
    size = detections[0].size
    if any(d.size != size for d in detections):
        raise ValueError(f"merge_detections needs one frame, got sizes {[d.size for d in detections]}")
    boxes = torch.cat([d.convert("xyxy").bbox for d in detections])
    scores = torch.cat([d.get_field("scores") for d in detections])
    labels = torch.cat([d.get_field("labels") for d in detections])
    keep = batched_nms(boxes, scores, labels, nms_threshold)[:detections_per_img]
    merged = BoxList(boxes[keep], size, mode="xyxy")
    merged.add_field("scores", scores[keep])
    merged.add_field("labels", labels[keep])
    return merged


def mask_probabilities(mask_head: nn.Module, features: Sequence[Tensor], boxes: Sequence[BoxList]) -> Tensor:
    """The mask head's probability of each box's class ("labels"): [sum K_i, 1, M, M]."""
    logits = mask_head.predictor(mask_head.feature_extractor(features, boxes))
    labels = torch.cat([b.get_field("labels") for b in boxes])
    rows = torch.arange(labels.shape[0], device=labels.device)
    return logits[rows, labels][:, None].sigmoid()


def averaged_masks(mask_head: nn.Module, views: Sequence[ViewOutput], merged: Sequence[BoxList]) -> Tensor:
    """Mask probabilities [sum K_i, 1, M, M] of the ``merged`` detections (reference frame, with
    "labels"), averaged over ``views``: each view's head output on the boxes mapped into it,
    mirrored back along x for a mirrored view."""
    total = None
    for view in views:
        mapped = [from_reference(m, d.size, view.flipped) for m, d in zip(merged, view.detections)]
        probs = mask_probabilities(mask_head, view.features, mapped)
        if view.flipped:
            probs = probs.flip(-1)
        total = probs if total is None else total + probs
    return total / len(views)


def merge_views(model: nn.Module, views: Sequence[ViewOutput], nms_threshold: float,
                detections_per_img: int) -> list[BoxList]:
    """The detections of ``views`` (views[0] is the reference view) merged per image in the
    reference frame, with "scores", "labels" and, for a mask model, "mask": the averaged
    [K, 1, M, M] probabilities, or pasted into the reference size when the mask head has a
    Masker (MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS), as the plain model returns them."""
    reference = views[0].detections
    merged = []
    for i, ref in enumerate(reference):
        per_view = [to_reference(v.detections[i], v.flipped, ref.size) for v in views]
        merged.append(merge_detections(per_view, nms_threshold, detections_per_img))
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is None or "mask" not in roi_heads:
        return merged
    head = roi_heads["mask"]
    probs = averaged_masks(head, views, merged).split([len(m) for m in merged])
    masker = head.post_processor.masker
    for prob, det in zip(probs, merged):
        det.add_field("mask", masker(prob, det) if masker is not None else prob)
    return merged
