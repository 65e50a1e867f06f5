"""RetinaNet (MODEL.RETINANET_ON) as one exportable graph: uint8 image in, detections out.

The same steps as :class:`~detbench.modeling.rpn.retinanet.inference.RetinaNetPostProcessor`
for one image, written on tensors only (no Python numbers taken from them), so that one
trace holds for any image size and any number of detections, 0 included.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detbench.layers.nms import batched_nms
from detbench.modeling.detector.generalized_rcnn import GeneralizedRCNN
from detbench.modeling.rpn.retinanet.loss import flatten_levels

from .preprocess import Preprocess
from .rcnn import clip_boxes, level_anchors


class ExportableRetinaNet(nn.Module):
    """uint8 RGB [H, W, 3] -> (boxes [N, 4] float32 xyxy, scores [N] float32, labels [N] int64)
    in the input image's pixels, by decreasing score."""

    output_names = ["boxes", "scores", "labels"]

    def __init__(self, model: GeneralizedRCNN, preprocess: Preprocess) -> None:
        super().__init__()
        self.model = model.eval()
        self.preprocess = preprocess

    def _level(self, level: int, logits: Tensor, deltas: Tensor, padded: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One level's candidates above the score threshold: (scores [k], labels [k], boxes [k, 4])."""
        retina = self.model.rpn
        selector = retina.box_selector
        num_classes = retina.head.num_classes
        flat_logits, flat_deltas = flatten_levels([logits], [deltas], num_classes)  # [1, R, K], [1, R, 4]
        scores = torch.sigmoid(flat_logits[0].reshape(-1).float())
        # The best pre_nms_top_n, then those above the threshold: the post-processor's candidates
        # (it ranks below-threshold scores last, then drops them).
        k = torch.clamp(torch._shape_as_tensor(scores)[0], max=selector.pre_nms_top_n)
        best, index = scores.topk(k)
        keep = torch.where(best > selector.score_thresh)[0]
        best, index = best[keep], index[keep]
        anchor_index = torch.div(index, num_classes, rounding_mode="floor")
        labels = index - anchor_index * num_classes + 1  # logit column c is class c + 1
        anchors = level_anchors(retina.anchor_generator, level, logits, padded)
        boxes = selector.box_coder.decode(flat_deltas[0, anchor_index], anchors[anchor_index].to(flat_deltas.dtype))
        return best, labels, boxes

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, size = self.preprocess(image)
        height, width = size.to(torch.float32).unbind()
        features = self.model.backbone(batch)
        logits, deltas = self.model.rpn.head(features)
        padded = torch._shape_as_tensor(batch)[-2:]
        parts = [self._level(level, c, d, padded) for level, (c, d) in enumerate(zip(logits, deltas))]
        scores, labels, boxes = (torch.cat(p) for p in zip(*parts))
        boxes = clip_boxes(boxes, height, width)
        selector = self.model.rpn.box_selector
        keep = batched_nms(boxes, scores, labels, selector.nms_thresh)[: selector.detections_per_img]
        # Back to the input image, as BoxList.resize scales: ratios in float64, then float32.
        ratio = (torch._shape_as_tensor(image)[:2].double() / size.double()).to(torch.float32)  # (h, w)
        scale = torch.stack((ratio[1], ratio[0], ratio[1], ratio[0]))
        return boxes[keep] * scale, scores[keep], labels[keep]
