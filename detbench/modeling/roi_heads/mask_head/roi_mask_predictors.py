"""Mask predictors: per-RoI feature map -> per-class mask logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.layers import ConvTranspose2d
from detbench.utils.registry import Registry

# Builders take (cfg, in_channels) and return a module with
# ``forward(x: Tensor[K, in_channels, h, w]) -> Tensor[K, NUM_CLASSES, 2h, 2w]`` mask logits.
ROI_MASK_PREDICTOR = Registry("ROI_MASK_PREDICTOR")


class MaskRCNNC4Predictor(nn.Module):
    """2x2 stride-2 transposed conv (``conv5_mask``) + ReLU, then a 1x1 conv
    (``mask_fcn_logits``) to one logit map per class: ``[K, C, h, w] -> [K, num_classes, 2h, 2w]``.

    Used by C4 and FPN models alike; names and init (kaiming_normal fan_out relu, zero bias)
    as maskrcnn-benchmark and torchvision's MaskRCNNPredictor.
    """

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int) -> None:
        super().__init__()
        self.conv5_mask = ConvTranspose2d(in_channels, dim_reduced, kernel_size=2, stride=2, padding=0)
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes, kernel_size=1, stride=1, padding=0)
        for layer in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x)))


@ROI_MASK_PREDICTOR.register("MaskRCNNC4Predictor")
def _build_c4(cfg: CfgNode, in_channels: int) -> MaskRCNNC4Predictor:
    # The deconvolution's width is the last conv width of the FPN extractor (256), C4 included.
    return MaskRCNNC4Predictor(
        in_channels, cfg.MODEL.ROI_MASK_HEAD.CONV_LAYERS[-1], cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    )


def build_roi_mask_predictor(cfg: CfgNode, in_channels: int) -> nn.Module:
    """The predictor named by MODEL.ROI_MASK_HEAD.PREDICTOR."""
    name = cfg.MODEL.ROI_MASK_HEAD.PREDICTOR
    return ROI_MASK_PREDICTOR.get(name, "MODEL.ROI_MASK_HEAD.PREDICTOR")(cfg, in_channels)


make_roi_mask_predictor = build_roi_mask_predictor  # maskrcnn-benchmark's name for it
