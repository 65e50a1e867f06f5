"""The detector registry and build_detection_model(cfg)."""

from __future__ import annotations

import torch
from torch import nn
from yacs.config import CfgNode

from detbench.modeling.backbone import build_backbone
from detbench.modeling.backbone.backbone import conv_weights_to_conv_layout
from detbench.modeling.roi_heads.roi_heads import build_roi_heads
from detbench.modeling.rpn import build_rpn
from detbench.utils.registry import Registry

from .generalized_rcnn import GeneralizedRCNN

# Builders take the config and return an nn.Module with GeneralizedRCNN's forward contract.
META_ARCHITECTURES = Registry("META_ARCHITECTURES")


@META_ARCHITECTURES.register("GeneralizedRCNN")
def _generalized_rcnn(cfg: CfgNode) -> GeneralizedRCNN:
    if cfg.MODEL.RETINANET_ON and not cfg.MODEL.RPN_ONLY:
        raise ValueError("MODEL.RETINANET_ON needs MODEL.RPN_ONLY True: RetinaNet's detections are final")
    backbone = build_backbone(cfg)
    rpn = build_rpn(cfg, backbone.out_channels)
    roi_heads = build_roi_heads(cfg, backbone.out_channels)
    if torch.device(cfg.MODEL.DEVICE).type == "cpu":
        # The backbone's and the RPN head's inputs are channels-last there (to_conv_layout); the
        # RoI heads' pooled features are not, so their weights stay as they are.
        conv_weights_to_conv_layout(backbone)
        conv_weights_to_conv_layout(rpn)
    return GeneralizedRCNN(backbone, rpn, roi_heads, cfg.DATALOADER.SIZE_DIVISIBILITY)


def build_detection_model(cfg: CfgNode) -> nn.Module:
    """The detector that ``cfg.MODEL.META_ARCHITECTURE`` names (weights are loaded elsewhere)."""
    return META_ARCHITECTURES.get(cfg.MODEL.META_ARCHITECTURE, "MODEL.META_ARCHITECTURE")(cfg)
