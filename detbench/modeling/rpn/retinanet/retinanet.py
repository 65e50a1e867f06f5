"""RetinaNet head, module and builder (maskrcnn-benchmark's names and config keys)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.structures import BoxList, ImageList

from ...box_coder import BoxCoder
from ...matcher import Matcher
from ..anchor_generator import AnchorGenerator
from .inference import RetinaNetPostProcessor
from .loss import RetinaNetLossComputation, flatten_levels


class RetinaNetHead(nn.Module):
    """Two towers of ``num_convs`` (3x3 conv + ReLU) shared by all levels, then a 3x3 conv to
    ``A * num_classes`` logits (``cls_logits``) and one to ``A * 4`` box deltas (``bbox_pred``).

    ``num_classes`` counts the foreground classes only (a sigmoid per class, no background
    logit). Weights are drawn from N(0, 0.01), biases zero, except the logits' bias,
    -log((1 - prior_prob) / prior_prob), so every class starts at probability prior_prob.
    Parameter names (cls_tower, bbox_tower, cls_logits, bbox_pred) are maskrcnn-benchmark's.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4,
                 prior_prob: float = 0.01) -> None:
        super().__init__()
        if num_classes < 1 or num_anchors < 1 or num_convs < 0 or not 0 < prior_prob < 1:
            raise ValueError(f"RetinaNetHead: bad arguments num_classes={num_classes}, num_anchors={num_anchors}, "
                             f"num_convs={num_convs}, prior_prob={prior_prob}")
        self.num_classes = num_classes
        for name in ("cls_tower", "bbox_tower"):
            layers: list[nn.Module] = []
            for _ in range(num_convs):
                layers += [nn.Conv2d(in_channels, in_channels, 3, 1, 1), nn.ReLU()]
            self.add_module(name, nn.Sequential(*layers))
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, 1, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, 1, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level [N, C, H, W] -> ([N, A * K, H, W] logits, [N, A * 4, H, W] deltas)."""
        logits = [self.cls_logits(self.cls_tower(f)) for f in features]
        deltas = [self.bbox_pred(self.bbox_tower(f)) for f in features]
        return logits, deltas


class RetinaNetModule(nn.Module):
    """Anchors, head, losses (training) and detections (evaluation), in RPNModule's place.

    ``forward(images, features, targets)`` returns ``(detections, losses)``: in training the
    detections are empty BoxLists and ``losses`` = {"loss_retina_cls", "loss_retina_reg"};
    in evaluation one BoxList per image with "scores" and "labels", and ``losses`` = {}.
    """

    # Parameters whose shape follows the class count (checkpoint loading reports them as such).
    class_dependent_prefixes = ("head.cls_logits.",)

    def __init__(self, anchor_generator: AnchorGenerator, head: RetinaNetHead,
                 loss_evaluator: RetinaNetLossComputation, box_selector: RetinaNetPostProcessor) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.loss_evaluator = loss_evaluator
        self.box_selector = box_selector

    def forward(self, images: ImageList, features: list[Tensor], targets: list[BoxList] | None = None
                ) -> tuple[list[BoxList], dict[str, Tensor]]:
        logits, deltas = self.head(features)
        anchors = self.anchor_generator(images, features)
        if not self.training:
            per_level = [flatten_levels([c], [d], self.head.num_classes) for c, d in zip(logits, deltas)]
            return self.box_selector(anchors, [c for c, _ in per_level], [d for _, d in per_level]), {}
        if targets is None:
            raise ValueError("RetinaNetModule needs targets in training mode")
        losses = self.loss_evaluator(anchors, logits, deltas, targets)
        empty = [_empty_detections(per_image[0].size, features[0]) for per_image in anchors]
        return empty, losses


def _empty_detections(image_size: tuple[int, int], like: Tensor) -> BoxList:
    result = BoxList(like.new_zeros((0, 4)), image_size, mode="xyxy")
    result.add_field("scores", like.new_zeros((0,)))
    result.add_field("labels", torch.zeros(0, dtype=torch.int64, device=like.device))
    return result


def octave_sizes(size: float, octave: float, scales_per_octave: int, round_down: bool) -> tuple[float, ...]:
    """Anchor sizes of one level: size * octave ** (i / scales_per_octave), i = 0 .. scales_per_octave - 1
    (truncated to integers with ``round_down``, torchvision's retinanet_resnet50_fpn)."""
    sizes = [size * octave ** (i / scales_per_octave) for i in range(scales_per_octave)]
    return tuple(float(int(s)) if round_down else s for s in sizes)


def build_retinanet_anchor_generator(cfg: CfgNode) -> AnchorGenerator:
    """AnchorGenerator of MODEL.RETINANET: SCALES_PER_OCTAVE x len(ASPECT_RATIOS) anchors per location."""
    r = cfg.MODEL.RETINANET
    per_level = [octave_sizes(s, r.OCTAVE, r.SCALES_PER_OCTAVE, r.ROUND_ANCHOR_SIZES) for s in r.ANCHOR_SIZES]
    return AnchorGenerator(aspect_ratios=r.ASPECT_RATIOS, anchor_strides=r.ANCHOR_STRIDES,
                           straddle_thresh=r.STRADDLE_THRESH, per_level_sizes=per_level,
                           strides_from_image=r.STRIDES_FROM_IMAGE)


def build_retinanet(cfg: CfgNode, in_channels: int) -> RetinaNetModule:
    """RetinaNet for a backbone with ``in_channels`` channels on every level, from MODEL.RETINANET."""
    r = cfg.MODEL.RETINANET
    anchor_generator = build_retinanet_anchor_generator(cfg)
    num_anchors = anchor_generator.num_anchors_per_location()[0]
    head = RetinaNetHead(in_channels, num_anchors, r.NUM_CLASSES - 1, r.NUM_CONVS, r.PRIOR_PROB)
    box_coder = BoxCoder(tuple(r.BBOX_REG_WEIGHTS))
    loss = RetinaNetLossComputation(
        Matcher(r.FG_IOU_THRESHOLD, r.BG_IOU_THRESHOLD, allow_low_quality_matches=True), box_coder,
        gamma=r.LOSS_GAMMA, alpha=r.LOSS_ALPHA, beta=r.BBOX_REG_BETA, reg_weight=r.BBOX_REG_WEIGHT,
        normalization=r.LOSS_NORMALIZATION, use_visibility=r.STRADDLE_THRESH >= 0)
    selector = RetinaNetPostProcessor(r.INFERENCE_TH, r.PRE_NMS_TOP_N, r.NMS_TH, r.DETECTIONS_PER_IMG, box_coder)
    return RetinaNetModule(anchor_generator, head, loss, selector)
