"""Box-head predictors: per-RoI feature -> class logits and box deltas.

Box deltas have 4 columns per class (class c in columns 4c..4c+3, background included);
with class-agnostic regression there are 2 "classes" (background, object).
"""

from __future__ import annotations

from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.utils.registry import Registry

# Builders take (cfg, in_channels) and return a module with
# ``forward(x) -> (class_logits [K, num_classes], box_regression [K, 4 * num_bbox_classes])``.
ROI_BOX_PREDICTOR = Registry("ROI_BOX_PREDICTOR")


class _LinearPredictor(nn.Module):
    """``cls_score`` and ``bbox_pred`` linear layers on a flat [K, in_channels] feature.

    Init as maskrcnn-benchmark and torchvision's detectors expect to fine-tune from:
    weights normal(std 0.01) for classes and normal(std 0.001) for boxes, zero biases.
    """

    def __init__(self, in_channels: int, num_classes: int, cls_agnostic_bbox_reg: bool = False) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        num_bbox_classes = 2 if cls_agnostic_bbox_reg else num_classes
        self.num_classes = num_classes
        self.cls_agnostic_bbox_reg = cls_agnostic_bbox_reg
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_bbox_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0)
        nn.init.constant_(self.bbox_pred.bias, 0)

    def _predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class FastRCNNPredictor(_LinearPredictor):
    """C4 models: global average pool of ``[K, C, h, w]`` res5 features, then the linear layers."""

    def __init__(self, in_channels: int, num_classes: int, cls_agnostic_bbox_reg: bool = False) -> None:
        super().__init__(in_channels, num_classes, cls_agnostic_bbox_reg)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: [K, C, h, w] -> ([K, num_classes], [K, 4 * num_bbox_classes])."""
        return self._predict(self.avgpool(x).flatten(start_dim=1))


class FPNPredictor(_LinearPredictor):
    """FPN models: the linear layers on flat ``[K, C]`` features (``[K, C, 1, 1]`` also accepted)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: [K, C] or [K, C, 1, 1] -> ([K, num_classes], [K, 4 * num_bbox_classes])."""
        if x.dim() == 4:
            if x.shape[2:] != (1, 1):
                raise ValueError(f"FPNPredictor needs [K, C] or [K, C, 1, 1] features, got {tuple(x.shape)}")
            x = x.flatten(start_dim=1)
        return self._predict(x)


def _predictor_args(cfg: CfgNode, in_channels: int) -> dict:
    return dict(
        in_channels=in_channels,
        num_classes=cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES,
        cls_agnostic_bbox_reg=cfg.MODEL.CLS_AGNOSTIC_BBOX_REG,
    )


@ROI_BOX_PREDICTOR.register("FastRCNNPredictor")
def _build_fast_rcnn(cfg: CfgNode, in_channels: int) -> FastRCNNPredictor:
    return FastRCNNPredictor(**_predictor_args(cfg, in_channels))


@ROI_BOX_PREDICTOR.register("FPNPredictor")
def _build_fpn(cfg: CfgNode, in_channels: int) -> FPNPredictor:
    return FPNPredictor(**_predictor_args(cfg, in_channels))


def build_roi_box_predictor(cfg: CfgNode, in_channels: int) -> nn.Module:
    """The predictor named by MODEL.ROI_BOX_HEAD.PREDICTOR."""
    name = cfg.MODEL.ROI_BOX_HEAD.PREDICTOR
    return ROI_BOX_PREDICTOR.get(name, "MODEL.ROI_BOX_HEAD.PREDICTOR")(cfg, in_channels)


make_roi_box_predictor = build_roi_box_predictor  # maskrcnn-benchmark's name for it
