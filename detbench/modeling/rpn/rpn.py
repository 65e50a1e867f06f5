"""Region proposal network: head, module and builder."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.structures import BoxList, ImageList
from detbench.utils.registry import Registry

from ..box_coder import BoxCoder
from .anchor_generator import AnchorGenerator, build_anchor_generator
from .inference import RPNPostProcessor, build_rpn_postprocessor
from .loss import RPNLossComputation, build_rpn_loss

RPN_HEADS = Registry("RPN_HEADS")
"""RPN heads. A builder takes ``(cfg, in_channels: int, num_anchors: int)`` and returns a module
whose ``forward(features: list[Tensor[N, C, H, W]])`` gives ``(objectness, box_deltas)``: per
level logits [N, A, H, W] and deltas [N, 4A, H, W] (channels 4a .. 4a + 3 for anchor a).
Selected by MODEL.RPN.RPN_HEAD."""


class SingleConvRPNHead(nn.Module):
    """conv 3x3 + ReLU, then 1x1 convs to A objectness logits and 4A box deltas, shared by all levels.

    Weights are drawn from N(0, 0.01), biases zero. Parameter names (conv, cls_logits,
    bbox_pred) are maskrcnn-benchmark's.
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1, stride=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1, stride=1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level [N, C, H, W] -> ([N, A, H, W] logits, [N, 4A, H, W] deltas)."""
        logits, deltas = [], []
        for feature in features:
            t = torch.relu(self.conv(feature))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


@RPN_HEADS.register("SingleConvRPNHead")
def _build_single_conv_head(cfg: CfgNode, in_channels: int, num_anchors: int) -> SingleConvRPNHead:
    return SingleConvRPNHead(in_channels, num_anchors)


class RPNModule(nn.Module):
    """Scores and regresses anchors, returns proposals (and the RPN losses in training).

    ``forward(images, features, targets)``:

    * ``features``: per level [N, C, H, W], highest resolution first, one per anchor stride.
    * returns ``(proposals, losses)``: per image a BoxList in image coordinates (size = the
      image's (width, height)) with field "objectness" (probability), sorted by decreasing
      objectness and detached; ``losses`` = {"loss_objectness", "loss_rpn_box_reg"} in
      training, {} otherwise.
    * training with ``rpn_only`` (nothing consumes the proposals): proposals are not computed
      and every image gets an empty BoxList.
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: nn.Module,
        loss_evaluator: RPNLossComputation,
        box_selector_train: RPNPostProcessor,
        box_selector_test: RPNPostProcessor,
        rpn_only: bool = False,
    ) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.loss_evaluator = loss_evaluator
        self.box_selector_train = box_selector_train
        self.box_selector_test = box_selector_test
        self.rpn_only = rpn_only

    def forward(
        self, images: ImageList, features: list[Tensor], targets: list[BoxList] | None = None
    ) -> tuple[list[BoxList], dict[str, Tensor]]:
        objectness, box_regression = self.head(features)
        anchors = self.anchor_generator(images, features)
        if not self.training:
            return self.box_selector_test(anchors, objectness, box_regression), {}
        if targets is None:
            raise ValueError("RPNModule needs targets in training mode")
        if self.rpn_only:
            proposals = [_empty_proposals(per_image[0].size, features[0]) for per_image in anchors]
        else:
            proposals = self.box_selector_train(anchors, objectness, box_regression)
        loss_objectness, loss_box_reg = self.loss_evaluator(anchors, objectness, box_regression, targets)
        return proposals, {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box_reg}


def _empty_proposals(image_size: tuple[int, int], like: Tensor) -> BoxList:
    proposals = BoxList(like.new_zeros((0, 4)), image_size, mode="xyxy")
    proposals.add_field("objectness", like.new_zeros((0,)))
    return proposals


def build_rpn(cfg: CfgNode, in_channels: int) -> nn.Module:
    """The RPN for a backbone with ``in_channels`` output channels, from MODEL.RPN and MODEL.RPN_ONLY;
    RetinaNet (same forward contract) with MODEL.RETINANET_ON, as in maskrcnn-benchmark."""
    if cfg.MODEL.RETINANET_ON:
        from .retinanet import build_retinanet  # here: retinanet imports this package's modules

        return build_retinanet(cfg, in_channels)
    anchor_generator = build_anchor_generator(cfg)
    num_anchors = anchor_generator.num_anchors_per_location()
    if len(set(num_anchors)) != 1:
        raise ValueError(f"the RPN head is shared by all levels, which need equal anchor counts: {num_anchors}")
    head = RPN_HEADS.get(cfg.MODEL.RPN.RPN_HEAD, config_key="MODEL.RPN.RPN_HEAD")(cfg, in_channels, num_anchors[0])
    box_coder = BoxCoder(tuple(cfg.MODEL.RPN.BBOX_REG_WEIGHTS))
    return RPNModule(
        anchor_generator,
        head,
        loss_evaluator=build_rpn_loss(cfg, box_coder),
        box_selector_train=build_rpn_postprocessor(cfg, box_coder, is_train=True),
        box_selector_test=build_rpn_postprocessor(cfg, box_coder, is_train=False),
        rpn_only=cfg.MODEL.RPN_ONLY,
    )
