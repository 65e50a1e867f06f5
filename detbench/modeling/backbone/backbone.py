"""The BACKBONES registry, the Backbone module (body + optional FPN) and build_backbone."""

from __future__ import annotations

import torch
from torch import nn

from detbench.utils.registry import Registry

from .fpn import FPN, LastLevelMaxPool
from detbench.modeling.utils import group_norm_factory

from .resnet import STAGE_SPECS, ResNet, build_resnet

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


class Backbone(nn.Module):
    """A body, optionally followed by an FPN: [N, 3, H, W] -> list of [N, out_channels, H_i, W_i].

    ``strides[i]`` is the number of input pixels per cell of output ``i``; every stride-2 step rounds
    up, so H_i = ceil(H / strides[i]). Submodules are named ``body`` and ``fpn`` as in
    maskrcnn-benchmark checkpoints.
    """

    def __init__(self, body: ResNet, fpn: FPN | None = None) -> None:
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
        """Input pixels per feature cell, one per output (C4: (16,), C5: (32,), FPN: (4, 8, 16, 32, 64))."""
        return tuple(self.body.strides) if self.fpn is None else self.fpn.output_strides(self.body.strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(to_conv_layout(x))
        return features if self.fpn is None else self.fpn(features)


def build_resnet_backbone(cfg) -> Backbone:
    """C4 / C5 bodies: the single output of the last stage (channels follow from the widths)."""
    return Backbone(build_resnet(cfg))


def build_resnet_fpn_backbone(cfg) -> Backbone:
    """ResNet with all four stages feeding an FPN of MODEL.RESNETS.BACKBONE_OUT_CHANNELS channels, plus P6."""
    body = build_resnet(cfg)
    fpn = FPN(
        body.out_channels,
        cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS,
        norm=group_norm_factory(cfg) if cfg.MODEL.FPN.USE_GN else None,
        use_relu=cfg.MODEL.FPN.USE_RELU,
        top_blocks=LastLevelMaxPool(),
    )
    return Backbone(body, fpn)


# One entry per ResNet stage table: "R-18-C4", "R-18-C5", "R-18-FPN", ... "R-152-FPN".
# ResNeXt bodies use the same names with MODEL.RESNETS.NUM_GROUPS > 1 (X-101-32x8d: "R-101-FPN").
# need MODEL.RESNETS.TRANS_FUNC "BasicBlockWithFixedBatchNorm" or "BasicBlockWithGN" and
# RES2_OUT_CHANNELS 64 (C4: 256 channels, C5: 512; the FPN width stays BACKBONE_OUT_CHANNELS).
for _name in STAGE_SPECS:
    BACKBONES.register(_name)(build_resnet_fpn_backbone if _name.endswith("-FPN") else build_resnet_backbone)


def build_backbone(cfg) -> Backbone:
    """The backbone named by MODEL.BACKBONE.CONV_BODY."""
    return BACKBONES.get(cfg.MODEL.BACKBONE.CONV_BODY, config_key="MODEL.BACKBONE.CONV_BODY")(cfg)
