"""Mask-head feature extractors: pooled RoI features -> a feature map per RoI.

Layer names follow maskrcnn-benchmark (``mask_fcn1``..``mask_fcnN``, with GroupNorm
``mask_fcn1.0`` conv and ``mask_fcn1.1`` norm) so its checkpoints load.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.modeling.poolers import Pooler, build_pooler
from detbench.modeling.utils import group_norm_factory
from detbench.structures.bounding_box import BoxList
from detbench.utils.registry import Registry

from ..box_head.roi_box_feature_extractors import ResNet50Conv5ROIFeatureExtractor, build_res5_extractor

# Builders take (cfg, in_channels) and return a module with an ``out_channels`` attribute and
# ``forward(features: list[Tensor], proposals: list[BoxList]) -> Tensor[K, out_channels, h, w]``,
# one row per proposal in the order of the concatenated proposals.
ROI_MASK_FEATURE_EXTRACTORS = Registry("ROI_MASK_FEATURE_EXTRACTORS")

NormFactory = Callable[[int], nn.Module]


def make_conv3x3(in_channels: int, out_channels: int, dilation: int = 1, norm: NormFactory | None = None) -> nn.Module:
    """3x3 conv (padding = dilation, so the size is kept), or ``Sequential(conv, norm)``.

    Init as maskrcnn-benchmark and torchvision: kaiming_normal (fan_out, relu), zero bias;
    with a norm the conv has no bias. The Sequential gives maskrcnn-benchmark's GN names
    (``mask_fcn1.0.weight``, ``mask_fcn1.1.weight``).
    """
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=norm is None)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if norm is None:
        nn.init.constant_(conv.bias, 0)
        return conv
    return nn.Sequential(conv, norm(out_channels))


class ConvFeatureExtractor(nn.Module):
    """Pool, then one 3x3 conv (+ optional norm) + ReLU per entry of ``layers`` (its output
    channels), named ``{prefix}1``, ``{prefix}2``, ... The FPN mask head
    ("MaskRCNNFPNFeatureExtractor", prefix "mask_fcn") and the keypoint head
    ("KeypointRCNNFeatureExtractor", prefix "conv_fcn") are both this.

    Output ``[K, layers[-1], oh, ow]`` (the pooled size is kept).
    """

    def __init__(
        self,
        pooler: Pooler,
        in_channels: int,
        layers: Sequence[int],
        dilation: int = 1,
        norm: NormFactory | None = None,
        prefix: str = "conv",
    ) -> None:
        super().__init__()
        if len(layers) == 0:
            raise ValueError("ConvFeatureExtractor needs at least one conv layer")
        self.pooler = pooler
        self.layer_names: list[str] = []
        for index, channels in enumerate(layers, start=1):
            name = f"{prefix}{index}"
            self.add_module(name, make_conv3x3(in_channels, channels, dilation, norm))
            self.layer_names.append(name)
            in_channels = channels
        self.out_channels: int = in_channels

    def apply_convs(self, x: Tensor) -> Tensor:
        """The conv layers alone: pooled [K, in_channels, h, w] -> [K, out_channels, h, w]."""
        for name in self.layer_names:
            x = F.relu(getattr(self, name)(x))
        return x

    def forward(self, features: Sequence[Tensor], proposals: Sequence[BoxList]) -> Tensor:
        return self.apply_convs(self.pooler(features, proposals))


@ROI_MASK_FEATURE_EXTRACTORS.register("ResNet50Conv5ROIFeatureExtractor")
def _build_res5(cfg: CfgNode, in_channels: int) -> ResNet50Conv5ROIFeatureExtractor:
    return build_res5_extractor(cfg, "ROI_MASK_HEAD", in_channels)


@ROI_MASK_FEATURE_EXTRACTORS.register("MaskRCNNFPNFeatureExtractor")
def _build_fpn(cfg: CfgNode, in_channels: int) -> ConvFeatureExtractor:
    node = cfg.MODEL.ROI_MASK_HEAD
    return ConvFeatureExtractor(
        build_pooler(cfg, "ROI_MASK_HEAD"),
        in_channels,
        node.CONV_LAYERS,
        dilation=node.DILATION,
        norm=group_norm_factory(cfg) if node.USE_GN else None,
        prefix="mask_fcn",
    )


def build_roi_mask_feature_extractor(cfg: CfgNode, in_channels: int) -> nn.Module:
    """The extractor named by MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR."""
    name = cfg.MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR
    return ROI_MASK_FEATURE_EXTRACTORS.get(name, "MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR")(cfg, in_channels)


make_roi_mask_feature_extractor = build_roi_mask_feature_extractor  # maskrcnn-benchmark's name for it
