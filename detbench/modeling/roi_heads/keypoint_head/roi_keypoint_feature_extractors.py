"""Keypoint-head feature extractors: pooled RoI features -> a feature map per RoI."""

from __future__ import annotations

from torch import nn
from yacs.config import CfgNode

from detbench.modeling.poolers import build_pooler
from detbench.utils.registry import Registry

from ..mask_head.roi_mask_feature_extractors import ConvFeatureExtractor

# Builders take (cfg, in_channels) and return a module with an ``out_channels`` attribute and
# ``forward(features: list[Tensor], proposals: list[BoxList]) -> Tensor[K, out_channels, h, w]``,
# one row per proposal in the order of the concatenated proposals.
ROI_KEYPOINT_FEATURE_EXTRACTORS = Registry("ROI_KEYPOINT_FEATURE_EXTRACTORS")


@ROI_KEYPOINT_FEATURE_EXTRACTORS.register("KeypointRCNNFeatureExtractor")
def _build_keypoint_rcnn(cfg: CfgNode, in_channels: int) -> ConvFeatureExtractor:
    """Pool, then MODEL.ROI_KEYPOINT_HEAD.CONV_LAYERS 3x3 convs + ReLU named conv_fcn1..N
    (maskrcnn-benchmark's names; init kaiming_normal fan_out relu, zero bias, as torchvision)."""
    return ConvFeatureExtractor(
        build_pooler(cfg, "ROI_KEYPOINT_HEAD"),
        in_channels,
        cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_LAYERS,
        prefix="conv_fcn",
    )


def build_roi_keypoint_feature_extractor(cfg: CfgNode, in_channels: int) -> nn.Module:
    """The extractor named by MODEL.ROI_KEYPOINT_HEAD.FEATURE_EXTRACTOR."""
    name = cfg.MODEL.ROI_KEYPOINT_HEAD.FEATURE_EXTRACTOR
    return ROI_KEYPOINT_FEATURE_EXTRACTORS.get(name, "MODEL.ROI_KEYPOINT_HEAD.FEATURE_EXTRACTOR")(cfg, in_channels)


make_roi_keypoint_feature_extractor = build_roi_keypoint_feature_extractor  # maskrcnn-benchmark's name for it
