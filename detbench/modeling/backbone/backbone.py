"""The BACKBONES registry, the Backbone module (body + optional FPN) and build_backbone."""

from __future__ import annotations

import torch
from torch import nn

from detbench.utils.registry import Registry

from .fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from detbench.modeling.utils import group_norm_factory

from .resnet import STAGE_SPECS, build_resnet

# BACKBONES: MODEL.BACKBONE.CONV_BODY -> builder(cfg) -> Backbone (``out_channels``, ``strides``,
# forward [N, 3, H, W] -> list of feature maps, highest resolution first).
BACKBONES = Registry("BACKBONES")


def to_conv_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout the convolutions of its device run fastest on; same values.

    On CPU with oneDNN, channels-last (NHWC): every convolution then keeps that layout, and
    Mask R-CNN R-50-FPN inference on 800x1333 took about 23 % less CPU time (training 21 %) than with
    contiguous (NCHW) tensors (docs/BENCHMARKS.md). The outputs stay channels-last: the CPU
    RoIAlign kernel reads channels-last maps directly (no NCHW copy).
    Elsewhere (CUDA, or CPU with oneDNN disabled) ``x`` is returned as it is.
    """
    onednn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    if x.device.type == "cpu" and x.dim() == 4 and onednn:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def conv_weights_to_conv_layout(module: nn.Module) -> nn.Module:
    """Store the 4-D weights of ``module``'s convolutions in the layout :func:`to_conv_layout`
    gives their inputs (channels-last on CPU with oneDNN; unchanged elsewhere), in place.

    oneDNN runs a convolution in its input's layout and otherwise converts an NCHW weight,
    and its gradient back, on every call. Values, names and state dicts are unchanged (loading
    copies into the weights whatever their layout). Returns ``module``.
    """
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            conv.weight.data = to_conv_layout(conv.weight.data)
    return module


class Backbone(nn.Module):
    """A body, optionally followed by an FPN: [N, 3, H, W] -> list of [N, out_channels, H_i, W_i].

    ``body`` (a ResNet or a MobileNetBody) reports ``out_channels`` and ``strides`` tuples, one per
    output. ``strides[i]`` is the number of input pixels per cell of output ``i``; every stride-2 step rounds
    up, so H_i = ceil(H / strides[i]). Submodules are named ``body`` and ``fpn`` as in
    maskrcnn-benchmark checkpoints.
    """

    def __init__(self, body: nn.Module, fpn: FPN | None = None) -> None:
        super().__init__()
        if fpn is None and len(body.out_channels) != 1:
            raise ValueError(f"A body with several outputs {body.out_channels} needs an FPN to merge them")
        if fpn is not None and tuple(fpn.in_channels_list) != tuple(body.out_channels):
            raise ValueError(f"FPN inputs {fpn.in_channels_list} do not match body outputs {body.out_channels}")
        self.body = body
        self.fpn = fpn

    @property
    def out_channels(self) -> int:
        """Channels of every output map."""
        return self.body.out_channels[0] if self.fpn is None else self.fpn.out_channels

    @property
    def strides(self) -> tuple[int, ...]:
        """Input pixels per feature cell, one per output (C4: (16,), C5: (32,), FPN: (4, 8, 16, 32, 64),
        MobileNet FPN: (32, 32, 64))."""
        return tuple(self.body.strides) if self.fpn is None else self.fpn.output_strides(self.body.strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(to_conv_layout(x))
        return features if self.fpn is None else self.fpn(features)


def build_resnet_backbone(cfg) -> Backbone:
    """C4 / C5 bodies: the single output of the last stage (channels follow from the widths)."""
    return Backbone(build_resnet(cfg))


def fpn_out_channels(cfg) -> int:
    """Channels of the FPN levels: MODEL.BACKBONE.OUT_CHANNELS when set (> 0), else RESNETS.BACKBONE_OUT_CHANNELS."""
    alias = cfg.MODEL.BACKBONE.OUT_CHANNELS
    return alias if alias > 0 else cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS


def max_pool_fpn(cfg, in_channels: tuple[int, ...]) -> FPN:
    """An FPN of fpn_out_channels(cfg) channels over ``in_channels`` plus a max-pooled extra
    level, with MODEL.FPN.USE_GN / USE_RELU."""
    return FPN(
        in_channels,
        fpn_out_channels(cfg),
        norm=group_norm_factory(cfg) if cfg.MODEL.FPN.USE_GN else None,
        use_relu=cfg.MODEL.FPN.USE_RELU,
        top_blocks=LastLevelMaxPool(),
    )


def build_resnet_fpn_backbone(cfg) -> Backbone:
    """ResNet with all four stages feeding an FPN of fpn_out_channels(cfg) channels, plus P6."""
    body = build_resnet(cfg)
    return Backbone(body, max_pool_fpn(cfg, body.out_channels))


def build_resnet_fpn_p3p7_backbone(cfg) -> Backbone:
    """RetinaNet's: C3..C5 feed an FPN (P3..P5, modules fpn_inner2..4), P6 and P7 from C5 or P5
    (MODEL.RETINANET.USE_C5); strides 8 .. 128."""
    body = build_resnet(cfg)
    out_channels = fpn_out_channels(cfg)
    use_c5 = cfg.MODEL.RETINANET.USE_C5
    fpn = FPN(
        body.out_channels,
        out_channels,
        norm=group_norm_factory(cfg) if cfg.MODEL.FPN.USE_GN else None,
        use_relu=cfg.MODEL.FPN.USE_RELU,
        top_blocks=LastLevelP6P7(body.out_channels[-1] if use_c5 else out_channels, out_channels, use_c5),
        first_level=2,
    )
    return Backbone(body, fpn)


def _builder_of(name: str):
    if name.endswith("-FPN-RETINANET"):
        return build_resnet_fpn_p3p7_backbone
    return build_resnet_fpn_backbone if name.endswith("-FPN") else build_resnet_backbone


# One entry per ResNet stage table: "R-18-C4", "R-18-C5", "R-18-FPN", "R-18-FPN-RETINANET", ... "R-152-FPN".
# ResNeXt bodies use the same names with MODEL.RESNETS.NUM_GROUPS > 1 (X-101-32x8d: "R-101-FPN").
# need MODEL.RESNETS.TRANS_FUNC "BasicBlockWithFixedBatchNorm" or "BasicBlockWithGN" and
# RES2_OUT_CHANNELS 64 (C4: 256 channels, C5: 512; the FPN width stays BACKBONE_OUT_CHANNELS).
for _name in STAGE_SPECS:
    BACKBONES.register(_name)(_builder_of(_name))


def build_backbone(cfg) -> Backbone:
    """The backbone named by MODEL.BACKBONE.CONV_BODY."""
    return BACKBONES.get(cfg.MODEL.BACKBONE.CONV_BODY, config_key="MODEL.BACKBONE.CONV_BODY")(cfg)
