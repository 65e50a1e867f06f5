"""Box-head feature extractors: pooled RoI features -> one feature per RoI.

Layer names follow maskrcnn-benchmark (``head``, ``fc6``, ``fc7``, ``xconvs``) so its
checkpoints load; the fc names also match torchvision's TwoMLPHead.
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

# Builders take (cfg, in_channels) and return a module with an ``out_channels`` attribute and
# ``forward(features: list[Tensor], proposals: list[BoxList]) -> Tensor[K, ...]``, one row per
# proposal in the order of the concatenated proposals.
ROI_BOX_FEATURE_EXTRACTORS = Registry("ROI_BOX_FEATURE_EXTRACTORS")

NormFactory = Callable[[int], nn.Module]


def make_fc(dim_in: int, hidden_dim: int, norm: NormFactory | None = None) -> nn.Module:
    """Linear layer with maskrcnn-benchmark's init (kaiming_uniform a=1, zero bias); with
    ``norm``, the bias is dropped and ``Sequential(linear, norm(hidden_dim))`` is returned."""
    fc = nn.Linear(dim_in, hidden_dim, bias=norm is None)
    nn.init.kaiming_uniform_(fc.weight, a=1)
    if norm is None:
        nn.init.constant_(fc.bias, 0)
        return fc
    return nn.Sequential(fc, norm(hidden_dim))


class ResNet50Conv5ROIFeatureExtractor(nn.Module):
    """C4 models: pool from the res4 map, then run the res5 stage on each RoI.

    Output ``[K, head.out_channels, oh / 2, ow / 2]`` (res5 strides by 2); the predictor
    averages it spatially.
    """

    def __init__(self, pooler: Pooler, head: nn.Module) -> None:
        super().__init__()
        self.pooler = pooler
        self.head = head
        self.out_channels: int = head.out_channels

    def forward(self, features: Sequence[Tensor], proposals: Sequence[BoxList]) -> Tensor:
        return self.head(self.pooler(features, proposals))


class FPN2MLPFeatureExtractor(nn.Module):
    """Pool, flatten, then two fully connected layers with ReLU: ``[K, representation_size]``."""

    def __init__(
        self, pooler: Pooler, in_channels: int, representation_size: int, norm: NormFactory | None = None
    ) -> None:
        super().__init__()
        self.pooler = pooler
        oh, ow = pooler.output_size
        self.fc6 = make_fc(in_channels * oh * ow, representation_size, norm)
        self.fc7 = make_fc(representation_size, representation_size, norm)
        self.out_channels = representation_size

    def forward(self, features: Sequence[Tensor], proposals: Sequence[BoxList]) -> Tensor:
        x = self.pooler(features, proposals).flatten(start_dim=1)
        x = F.relu(self.fc6(x))
        return F.relu(self.fc7(x))


class FPNXconv1fcFeatureExtractor(nn.Module):
    """Pool, ``num_convs`` 3x3 convolutions (+ optional norm) with ReLU, then one fc with ReLU.

    Output ``[K, representation_size]``. Convolutions keep the pooled size (padding = dilation).
    """

    def __init__(
        self,
        pooler: Pooler,
        in_channels: int,
        conv_dim: int,
        num_convs: int,
        representation_size: int,
        dilation: int = 1,
        norm: NormFactory | None = None,
    ) -> None:
        super().__init__()
        self.pooler = pooler
        layers: list[nn.Module] = []
        for _ in range(num_convs):
            conv = nn.Conv2d(
                in_channels, conv_dim, 3, padding=dilation, dilation=dilation, bias=norm is None
            )
            nn.init.normal_(conv.weight, std=0.01)
            if conv.bias is not None:
                nn.init.constant_(conv.bias, 0)
            layers.append(conv)
            if norm is not None:
                layers.append(norm(conv_dim))
            layers.append(nn.ReLU(inplace=True))
            in_channels = conv_dim
        # One Sequential named "xconvs" keeps maskrcnn-benchmark's parameter names (xconvs.0.weight...).
        self.xconvs = nn.Sequential(*layers)
        oh, ow = pooler.output_size
        self.fc6 = make_fc(in_channels * oh * ow, representation_size)
        self.out_channels = representation_size

    def forward(self, features: Sequence[Tensor], proposals: Sequence[BoxList]) -> Tensor:
        x = self.xconvs(self.pooler(features, proposals))
        return F.relu(self.fc6(x.flatten(start_dim=1)))


def build_res5_extractor(cfg: CfgNode, head_key: str, in_channels: int) -> ResNet50Conv5ROIFeatureExtractor:
    """The C4 extractor of MODEL.<head_key> (ROI_BOX_HEAD, ROI_MASK_HEAD): its pooler, then res5."""
    # Imported here: the backbone package is only needed by C4 heads.
    from detbench.modeling.backbone.resnet import make_resnet_head

    head = make_resnet_head(cfg, dilation=cfg.MODEL[head_key].DILATION)
    expected = getattr(head, "in_channels", in_channels)
    if expected != in_channels:
        raise ValueError(
            f"ResNet50Conv5ROIFeatureExtractor: the res5 head takes {expected} channels but the backbone "
            f"gives {in_channels}; check MODEL.RESNETS.RES2_OUT_CHANNELS / BACKBONE_OUT_CHANNELS"
        )
    return ResNet50Conv5ROIFeatureExtractor(build_pooler(cfg, head_key), head)


@ROI_BOX_FEATURE_EXTRACTORS.register("ResNet50Conv5ROIFeatureExtractor")
def _build_res5(cfg: CfgNode, in_channels: int) -> ResNet50Conv5ROIFeatureExtractor:
    return build_res5_extractor(cfg, "ROI_BOX_HEAD", in_channels)


@ROI_BOX_FEATURE_EXTRACTORS.register("FPN2MLPFeatureExtractor")
def _build_2mlp(cfg: CfgNode, in_channels: int) -> FPN2MLPFeatureExtractor:
    head = cfg.MODEL.ROI_BOX_HEAD
    return FPN2MLPFeatureExtractor(
        build_pooler(cfg, "ROI_BOX_HEAD"),
        in_channels,
        head.MLP_HEAD_DIM,
        norm=group_norm_factory(cfg) if head.USE_GN else None,
    )


@ROI_BOX_FEATURE_EXTRACTORS.register("FPNXconv1fcFeatureExtractor")
def _build_xconv1fc(cfg: CfgNode, in_channels: int) -> FPNXconv1fcFeatureExtractor:
    head = cfg.MODEL.ROI_BOX_HEAD
    return FPNXconv1fcFeatureExtractor(
        build_pooler(cfg, "ROI_BOX_HEAD"),
        in_channels,
        conv_dim=head.CONV_HEAD_DIM,
        num_convs=head.NUM_STACKED_CONVS,
        representation_size=head.MLP_HEAD_DIM,
        dilation=head.DILATION,
        norm=group_norm_factory(cfg) if head.USE_GN else None,
    )


def build_roi_box_feature_extractor(cfg: CfgNode, in_channels: int) -> nn.Module:
    """The extractor named by MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR."""
    name = cfg.MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR
    return ROI_BOX_FEATURE_EXTRACTORS.get(name, "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR")(cfg, in_channels)


make_roi_box_feature_extractor = build_roi_box_feature_extractor  # maskrcnn-benchmark's name for it
