"""RetinaNet post-processing: per-level candidates, box decoding, per-class NMS, top detections."""

from __future__ import annotations

import torch
from torch import Tensor

from detbench.layers import batched_nms
from detbench.structures import BoxList

from ...box_coder import BoxCoder


class RetinaNetPostProcessor:
    """Turns the head's outputs into detections, per image.

    For each FPN level, the (anchor, class) pairs with probability sigmoid(logit) >
    ``score_thresh`` are candidates, of which the ``pre_nms_top_n`` best are kept; their
    anchors' deltas are decoded and clipped to the image. The candidates of all levels then go
    through NMS within each class (``nms_thresh``) and the ``detections_per_img`` best remain,
    by decreasing score. This is torchvision's RetinaNet procedure; here the top-k of each
    level runs once for the whole batch and one batched NMS covers every image and class.

    Output: per image a BoxList (xyxy, in the image's size) with "scores" and "labels"
    (class c >= 1 is logit column c - 1).
    """

    def __init__(self, score_thresh: float, pre_nms_top_n: int, nms_thresh: float, detections_per_img: int,
                 box_coder: BoxCoder) -> None:
        self.score_thresh = score_thresh
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.box_coder = box_coder

    def _level_candidates(self, logits: Tensor, deltas: Tensor, anchors: Tensor
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One level, whole batch: logits [N, R, K], deltas [N, R, 4], anchors [R, 4] ->
        (scores [N, k], labels [N, k], decoded boxes [N, k, 4], valid [N, k]) with k = min(top_n, R K)."""
        n, _, k_classes = logits.shape
        scores = torch.sigmoid(logits.reshape(n, -1).float())
        top = min(self.pre_nms_top_n, scores.shape[1])
        # Every score above the threshold ranks before every other, so the top-k holds the valid
        # candidates first (no masked copy of the [N, R K] scores: 54 MB on P3 at 800x1333).
        best, index = scores.topk(top, dim=1)
        anchor_index, labels = index // k_classes, index % k_classes + 1
        picked_deltas = deltas.gather(1, anchor_index[..., None].expand(-1, -1, 4))
        boxes = self.box_coder.decode(picked_deltas.reshape(-1, 4), anchors[anchor_index.reshape(-1)])
        return best, labels, boxes.reshape(n, top, 4), best > self.score_thresh

    def __call__(self, anchors: list[list[BoxList]], logits: list[Tensor], deltas: list[Tensor]) -> list[BoxList]:
        """``anchors``: per image, per level (shared grids); ``logits`` [N, R_l, K] and ``deltas``
        [N, R_l, 4] per level, flattened like the anchors."""
        per_level = [self._level_candidates(c, d, a.bbox) for c, d, a in zip(logits, deltas, anchors[0])]
        scores, labels, boxes, valid = (torch.cat(parts, dim=1) for parts in zip(*per_level))
        num_images, num_classes = len(anchors), logits[0].shape[2]
        sizes = [per_image[0].size for per_image in anchors]  # (width, height)
        limit = boxes.new_tensor([[w, h, w, h] for w, h in sizes])[:, None, :]
        boxes = torch.minimum(boxes.clamp(min=0), limit)
        image = torch.arange(num_images, device=boxes.device)[:, None].expand_as(labels)
        keep = torch.nonzero(valid.reshape(-1))[:, 0]
        flat_boxes, flat_scores = boxes.reshape(-1, 4)[keep], scores.reshape(-1)[keep]
        flat_labels, flat_image = labels.reshape(-1)[keep], image.reshape(-1)[keep]
        # One NMS: categories are (image, class) pairs, so neither images nor classes interact.
        kept = batched_nms(flat_boxes, flat_scores, flat_image * (num_classes + 1) + flat_labels, self.nms_thresh)
        results = []
        for i, size in enumerate(sizes):
            mine = kept[flat_image[kept] == i][: self.detections_per_img]  # kept is by decreasing score
            result = BoxList(flat_boxes[mine], size, mode="xyxy")
            result.add_field("scores", flat_scores[mine])
            result.add_field("labels", flat_labels[mine])
            results.append(result)
        return results
