"""Box-head post-processing: class scores and box deltas -> final detections per image.

Configured like torchvision (score 0.05, NMS 0.5, 100 detections, min size 1e-2) it gives
the same boxes, scores and labels as ``RoIHeads.postprocess_detections``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.layers.nms import batched_nms
from detbench.modeling.box_coder import BoxCoder
from detbench.structures.bounding_box import BoxList


def _clip(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """[..., 4] xyxy boxes clamped to an image of ``size = (width, height)``."""
    width, height = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    # Interleave back to (x1, y1, x2, y2).
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


class PostProcessor(nn.Module):
    """Softmax, per-class box decoding, clipping, score and size filters, per-class NMS, top-k.

    Args:
        score_thresh: keep class scores strictly above this.
        nms: IoU threshold of the per-class NMS.
        detections_per_img: keep at most this many detections per image, best scores first.
        min_size: drop boxes whose width or height is below this, after clipping (pixels).
        box_coder: decodes the deltas relative to the proposals.
        cls_agnostic_bbox_reg: deltas are [K, 8] (background, object); every class uses the object's.
    """

    def __init__(
        self,
        score_thresh: float = 0.05,
        nms: float = 0.5,
        detections_per_img: int = 100,
        min_size: float = 0.0,
        box_coder: BoxCoder | None = None,
        cls_agnostic_bbox_reg: bool = False,
    ) -> None:
        super().__init__()
        self.score_thresh = score_thresh
        self.nms = nms
        self.detections_per_img = detections_per_img
        self.min_size = min_size
        self.box_coder = box_coder if box_coder is not None else BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.cls_agnostic_bbox_reg = cls_agnostic_bbox_reg

    def decode(self, box_regression: Tensor, boxes: Tensor, num_classes: int) -> Tensor:
        """Deltas [K, 4C] (or [K, 8] agnostic) relative to [K, 4] boxes -> [K, C, 4] boxes."""
        if self.cls_agnostic_bbox_reg:
            # Columns 4..7 hold the object deltas; the same box serves every class.
            decoded = self.box_coder.decode(box_regression[:, 4:8], boxes)
            return decoded[:, None, :].expand(-1, num_classes, 4)
        return self.box_coder.decode(box_regression, boxes).reshape(boxes.shape[0], num_classes, 4)

    def filter_results(self, boxes: Tensor, scores: Tensor, size: tuple[int, int]) -> BoxList:
        """One image: boxes [K, C, 4] and scores [K, C] (column 0 = background) -> detections."""
        num_classes = scores.shape[1]
        labels = torch.arange(num_classes, device=scores.device).expand_as(scores)
        # Every (proposal, foreground class) pair becomes one candidate detection.
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = scores[:, 1:].reshape(-1)
        labels = labels[:, 1:].reshape(-1)

        keep = torch.where(scores > self.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = torch.where((wh >= self.min_size).all(dim=1))[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]

        # Offsetting by class inside batched_nms keeps classes apart; kept indices come sorted by score.
        keep = batched_nms(boxes, scores, labels, self.nms)[: self.detections_per_img]
        result = BoxList(boxes[keep], size, mode="xyxy")
        result.add_field("scores", scores[keep])
        result.add_field("labels", labels[keep])
        return result

    def forward(self, class_logits: Tensor, box_regression: Tensor, proposals: Sequence[BoxList]) -> list[BoxList]:
        """class_logits [K, C], box_regression [K, 4C] for the concatenated ``proposals`` ->
        one BoxList per image with "scores" [D] and "labels" [D] int64 (1..C-1), D <= detections_per_img."""
        num_classes = class_logits.shape[1]
        concat = torch.cat([p.convert("xyxy").bbox for p in proposals], dim=0)
        boxes = self.decode(box_regression, concat, num_classes)
        scores = F.softmax(class_logits, -1)
        counts = [len(p) for p in proposals]
        results = []
        for boxes_i, scores_i, p in zip(boxes.split(counts), scores.split(counts), proposals):
            results.append(self.filter_results(_clip(boxes_i, p.size), scores_i, p.size))
        return results


def make_roi_box_post_processor(cfg: CfgNode) -> PostProcessor:
    """PostProcessor from MODEL.ROI_HEADS (test settings) and MODEL.CLS_AGNOSTIC_BBOX_REG."""
    heads = cfg.MODEL.ROI_HEADS
    return PostProcessor(
        score_thresh=heads.SCORE_THRESH,
        nms=heads.NMS,
        detections_per_img=heads.DETECTIONS_PER_IMG,
        min_size=heads.MIN_DETECTION_SIZE,
        box_coder=BoxCoder(weights=tuple(heads.BBOX_REG_WEIGHTS)),
        cls_agnostic_bbox_reg=cfg.MODEL.CLS_AGNOSTIC_BBOX_REG,
    )
