"""Convolutional bodies: ResNet / ResNeXt with C4, C5 or FPN outputs, and the res5 RoI head."""

from .backbone import BACKBONES, Backbone, build_backbone
from .fpn import FPN, LastLevelMaxPool
from .resnet import (
    BOTTLENECKS,
    STAGE_SPECS,
    STEMS,
    ResNet,
    ResNetHead,
    StageSpec,
    build_resnet,
    make_resnet_head,
)

__all__ = [
    "BACKBONES",
    "BOTTLENECKS",
    "Backbone",
    "FPN",
    "LastLevelMaxPool",
    "ResNet",
    "ResNetHead",
    "STAGE_SPECS",
    "STEMS",
    "StageSpec",
    "build_backbone",
    "build_resnet",
    "make_resnet_head",
]
