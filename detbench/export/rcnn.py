"""GeneralizedRCNN's test-time forward for one image, written to be traced for any image size.

The trained modules (backbone, RPN head, box / mask / keypoint feature extractors and
predictors) are the detector's own; the glue between them (anchors, RPN selection, box
post-processing, mask pasting, keypoint decoding) calls the detector's own functions where
they take no Python numbers from tensors, and restates the rest on tensors: one number
taken from a tensor would be frozen into the trace as a constant of the sample image.
The results are those of :class:`detbench.engine.Predictor` (its tests compare them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detbench.layers.nms import batched_nms
from detbench.modeling.detector.generalized_rcnn import GeneralizedRCNN
from detbench.modeling.roi_heads.keypoint_head.inference import heatmaps_to_keypoints_dense
from detbench.modeling.roi_heads.mask_head.inference import paste_masks_in_image_dense
from detbench.modeling.rpn.anchor_generator import AnchorGenerator
from detbench.modeling.rpn.inference import concat_box_prediction_layers, keep_top_n_per_level
from detbench.modeling.rpn.rpn import RPNModule
from detbench.structures.bounding_box import BoxList

from .preprocess import Preprocess

# The pooler reads only the boxes of a BoxList; its image size is not used on this path.
_UNUSED_SIZE = (0, 0)


def clip_boxes(boxes: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """[..., 4] xyxy boxes clamped to [0, width] x [0, height] (0-dim float tensors)."""
    zero = torch.zeros_like(width)
    x = torch.minimum(torch.maximum(boxes[..., 0::2], zero), width)
    y = torch.minimum(torch.maximum(boxes[..., 1::2], zero), height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def level_anchors(generator: AnchorGenerator, level: int, logits: Tensor, padded: Tensor) -> Tensor:
    """[H * W * A, 4] anchors of ``level`` for its head output ``logits`` [1, *, H, W];
    ``padded``: the [2] (height, width) of the padded image tensor the features come from."""
    shape = torch._shape_as_tensor(logits)
    if generator.strides_from_image:  # torchvision's rule, traced: padded size // grid size per axis
        stride = (padded[0] // shape[2], padded[1] // shape[3])
    else:
        stride = (generator.strides[level],) * 2
    # The uncached grid (the cache keys on Python ints); its arange takes the traced sizes.
    return generator._make_grid_anchors(level, shape[2], shape[3], logits.device, stride)


def _level_candidates(rpn: RPNModule, level: int, logits: Tensor, deltas: Tensor,
                      padded: Tensor) -> tuple[Tensor, Tensor]:
    """One level's best ``pre_nms_top_n`` anchors, decoded: (boxes [K, 4], objectness [K]).
    ``padded``: the [2] (height, width) of the padded image tensor the features come from."""
    selector = rpn.box_selector_test
    shape = torch._shape_as_tensor(logits)  # [1, A, H, W]
    anchors = level_anchors(rpn.anchor_generator, level, logits, padded)
    flat_logits, flat_deltas = concat_box_prediction_layers([logits], [deltas])  # [1, T], [1, T, 4]
    k = shape[1] * shape[2] * shape[3]
    if selector.pre_nms_top_n > 0:
        k = torch.clamp(k, max=selector.pre_nms_top_n)
    top = flat_logits[0].topk(k).indices
    boxes = selector.box_coder.decode(flat_deltas[0, top], anchors[top].to(flat_deltas.dtype))
    return boxes, flat_logits[0, top].sigmoid()


def rpn_proposals(rpn: RPNModule, features: list[Tensor], height: Tensor, width: Tensor,
                  padded: Tensor) -> Tensor:
    """:class:`RPNPostProcessor` (test settings) for one image of ``height x width`` (0-dim
    float) pixels, padded to ``padded`` ([2] height, width): proposals [P, 4] by decreasing objectness."""
    selector = rpn.box_selector_test
    objectness, deltas = rpn.head(features)
    boxes, scores, levels = [], [], []
    for level, (logits, level_deltas) in enumerate(zip(objectness, deltas)):
        level_boxes, level_scores = _level_candidates(rpn, level, logits, level_deltas, padded)
        boxes.append(level_boxes)
        scores.append(level_scores)
        levels.append(torch.full_like(level_scores, level, dtype=torch.int64))
    boxes = clip_boxes(torch.cat(boxes), height, width)
    scores, levels = torch.cat(scores), torch.cat(levels)
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = torch.where((wh[:, 0] >= selector.min_size) & (wh[:, 1] >= selector.min_size))[0]
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    keep = batched_nms(boxes, scores, levels, selector.nms_thresh)
    if selector.post_nms_top_n > 0:
        keep = keep_top_n_per_level(keep, levels, selector.post_nms_top_n, len(objectness))
    if selector._fpn_top_n():
        keep = keep[: selector.fpn_post_nms_top_n]
    return boxes[keep]


class ExportableRCNN(nn.Module):
    """uint8 RGB [H, W, 3] -> detections in the image's pixels, as a tuple of tensors:
    boxes [N, 4] float32 xyxy, scores [N] float32, labels [N] int64, then for mask models
    masks [N, 1, H, W] float32 probabilities, for keypoint models keypoints [N, K, 3]
    float32 (x, y, heatmap score). ``output_names`` names them in this order.
    """

    def __init__(self, model: GeneralizedRCNN, preprocess: Preprocess) -> None:
        super().__init__()
        if model.roi_heads is None:
            raise ValueError("ExportableRCNN needs RoI heads (an RPN-only model has no detections)")
        self.model = model.eval()
        self.preprocess = preprocess
        heads = model.roi_heads
        self.output_names = ["boxes", "scores", "labels"]
        self.output_names += ["masks"] * ("mask" in heads) + ["keypoints"] * ("keypoint" in heads)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        batch, size = self.preprocess(image)
        height, width = size.to(torch.float32).unbind()
        features = self.model.backbone(batch)
        proposals = rpn_proposals(self.model.rpn, features, height, width, torch._shape_as_tensor(batch)[-2:])
        boxes, scores, labels = self._detections(features, proposals, height, width)
        # Back to the input image, as BoxList.resize scales: ratios in float64, then float32.
        original = torch._shape_as_tensor(image)[:2]
        ratio = (original.double() / size.double()).to(torch.float32)  # (h, w)
        outputs = [boxes * torch.stack((ratio[1], ratio[0], ratio[1], ratio[0])), scores, labels]
        heads = self.model.roi_heads
        if "mask" in heads:
            outputs.append(self._masks(features, boxes, labels, outputs[0], original))
        if "keypoint" in heads:
            outputs.append(self._keypoints(features, boxes, ratio))
        return tuple(outputs)

    def _detections(self, features: list[Tensor], proposals: Tensor, height: Tensor,
                    width: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The box head and :class:`PostProcessor` on one image's proposals."""
        head = self.model.roi_heads["box"]
        x = head.feature_extractor(features, [BoxList(proposals, _UNUSED_SIZE)])
        class_logits, box_regression = head.predictor(x)
        post = head.post_processor
        boxes = post.decode(box_regression, proposals, class_logits.shape[1])
        scores = F.softmax(class_logits, -1)
        result = post.filter_results(clip_boxes(boxes, height, width), scores, _UNUSED_SIZE)
        return result.bbox, result.get_field("scores"), result.get_field("labels")

    def _masks(self, features: list[Tensor], boxes: Tensor, labels: Tensor, image_boxes: Tensor,
               original: Tensor) -> Tensor:
        """Mask probabilities of each detection's class, pasted into the input image."""
        head = self.model.roi_heads["mask"]
        logits = head.predictor(head.feature_extractor(features, [BoxList(boxes, _UNUSED_SIZE)]))
        rows = torch.arange(logits.shape[0], device=logits.device)
        probs = logits[rows, labels][:, None].sigmoid()
        aligned = head.post_processor.aligned  # the pixel model the masks were trained with
        return paste_masks_in_image_dense(probs, image_boxes, original[0], original[1], aligned=aligned)

    def _keypoints(self, features: list[Tensor], boxes: Tensor, ratio: Tensor) -> Tensor:
        """[N, K, 3]: (x, y) in the input image and the heatmap score of each keypoint."""
        head = self.model.roi_heads["keypoint"]
        maps = head.predictor(head.feature_extractor(features, [BoxList(boxes, _UNUSED_SIZE)]))
        points, scores = heatmaps_to_keypoints_dense(maps, boxes)
        xy = points[..., :2] * torch.stack((ratio[1], ratio[0]))
        return torch.cat((xy, scores[..., None]), dim=-1)
