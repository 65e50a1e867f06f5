"""Convolutional bodies: ResNet / ResNeXt with C4, C5 or FPN outputs, the res5 RoI head, and
torchvision's MobileNetV2 / V3-Large with one level or an FPN."""

from .backbone import BACKBONES, Backbone, build_backbone
from .fpn import FPN, LastLevelMaxPool
from .mobilenet import MobileNetBody
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
    "MobileNetBody",
    "ResNet",
    "ResNetHead",
    "STAGE_SPECS",
    "STEMS",
    "StageSpec",
    "build_backbone",
    "build_resnet",
    "make_resnet_head",
]
