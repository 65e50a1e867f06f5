"""Keypoint predictors: per-RoI feature map -> one heatmap of logits per keypoint."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.layers import ConvTranspose2d
from detbench.utils.registry import Registry

# Builders take (cfg, in_channels) and return a module with
# ``forward(x: Tensor[K, in_channels, h, w]) -> Tensor[K, NUM_CLASSES, 4h, 4w]`` heatmap logits.
ROI_KEYPOINT_PREDICTOR = Registry("ROI_KEYPOINT_PREDICTOR")


class KeypointRCNNPredictor(nn.Module):
    """4x4 stride-2 transposed conv (``kps_score_lowres``, padding 1: doubles the size) to one
    map per keypoint, then bilinear x2 upsampling (align_corners=False):
    ``[K, C, h, w] -> [K, num_keypoints, 4h, 4w]``. As torchvision's KeypointRCNNPredictor
    (init kaiming_normal fan_out relu, zero bias)."""

    def __init__(self, in_channels: int, num_keypoints: int, up_scale: int = 2) -> None:
        super().__init__()
        self.kps_score_lowres = ConvTranspose2d(in_channels, num_keypoints, kernel_size=4, stride=2, padding=1)
        nn.init.kaiming_normal_(self.kps_score_lowres.weight, mode="fan_out", nonlinearity="relu")
        nn.init.constant_(self.kps_score_lowres.bias, 0)
        self.up_scale = up_scale

    def forward(self, x: Tensor) -> Tensor:
        x = self.kps_score_lowres(x)
        return F.interpolate(
            x, scale_factor=float(self.up_scale), mode="bilinear", align_corners=False, recompute_scale_factor=False
        )


@ROI_KEYPOINT_PREDICTOR.register("KeypointRCNNPredictor")
def _build_keypoint_rcnn(cfg: CfgNode, in_channels: int) -> KeypointRCNNPredictor:
    return KeypointRCNNPredictor(in_channels, cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_CLASSES)


def build_roi_keypoint_predictor(cfg: CfgNode, in_channels: int) -> nn.Module:
    """The predictor named by MODEL.ROI_KEYPOINT_HEAD.PREDICTOR."""
    name = cfg.MODEL.ROI_KEYPOINT_HEAD.PREDICTOR
    return ROI_KEYPOINT_PREDICTOR.get(name, "MODEL.ROI_KEYPOINT_HEAD.PREDICTOR")(cfg, in_channels)


make_roi_keypoint_predictor = build_roi_keypoint_predictor  # maskrcnn-benchmark's name for it
