"""The RoI heads of a detector (box, then optionally mask and keypoint) run as one module."""

from __future__ import annotations

import torch
from torch import nn
from yacs.config import CfgNode

from detbench.structures.bounding_box import BoxList

from .box_head.box_head import build_roi_box_head
from .keypoint_head.keypoint_head import build_roi_keypoint_head
from .mask_head.mask_head import build_roi_mask_head


class CombinedROIHeads(nn.ModuleDict):
    """Box head, then mask and keypoint heads on its output.

    Training: the mask and keypoint heads both get the proposals that the box head
    sampled (with "labels" and "matched_idxs"). Testing: detections flow through the
    heads, each adding its fields. With ``share_*_features`` the head reuses the box
    head's feature extractor module (C4 models), and in training its features too.
    """

    def __init__(self, heads: dict[str, nn.Module], share_mask_features: bool = False,
                 share_keypoint_features: bool = False) -> None:
        super().__init__(heads)
        self.share_mask_features = share_mask_features and "mask" in heads
        self.share_keypoint_features = share_keypoint_features and "keypoint" in heads
        if self.share_mask_features:
            self["mask"].feature_extractor = self["box"].feature_extractor
        if self.share_keypoint_features:
            self["keypoint"].feature_extractor = self["box"].feature_extractor

    def forward(
        self, features: list[torch.Tensor], proposals: list[BoxList], targets: list[BoxList] | None = None
    ) -> tuple[torch.Tensor, list[BoxList], dict[str, torch.Tensor]]:
        """Returns (box features [K, D], detections or sampled proposals, losses)."""
        x, detections, losses = self["box"](features, proposals, targets)
        losses = dict(losses)
        sampled = detections
        for name, shared in (("mask", self.share_mask_features), ("keypoint", self.share_keypoint_features)):
            if name not in self:
                continue
            box_features = x if (self.training and shared) else None
            inputs = sampled if self.training else detections
            _, out, head_losses = self[name](features, inputs, targets, box_features=box_features)
            losses.update(head_losses)
            if not self.training:
                detections = out
        return x, detections, losses


def _shared(cfg: CfgNode, head: str) -> bool:
    """Whether ``head`` (ROI_MASK_HEAD / ROI_KEYPOINT_HEAD) reuses the box head's extractor."""
    node = cfg.MODEL[head]
    if not node.SHARE_BOX_FEATURE_EXTRACTOR:
        return False
    box_extractor = cfg.MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR
    if node.FEATURE_EXTRACTOR != box_extractor:
        raise ValueError(
            f"MODEL.{head}.SHARE_BOX_FEATURE_EXTRACTOR is True but MODEL.{head}.FEATURE_EXTRACTOR "
            f"({node.FEATURE_EXTRACTOR}) differs from MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR ({box_extractor}); "
            f"set it to False (as FPN configs do) or use the same extractor"
        )
    return True


def build_roi_heads(cfg: CfgNode, in_channels: int) -> CombinedROIHeads | None:
    """The RoI heads the config asks for, or None for an RPN-only model."""
    if cfg.MODEL.RPN_ONLY:
        return None
    heads: dict[str, nn.Module] = {"box": build_roi_box_head(cfg, in_channels)}
    if cfg.MODEL.MASK_ON:
        heads["mask"] = build_roi_mask_head(cfg, in_channels)
    if cfg.MODEL.KEYPOINT_ON:
        heads["keypoint"] = build_roi_keypoint_head(cfg, in_channels)
    return CombinedROIHeads(
        heads,
        share_mask_features=cfg.MODEL.MASK_ON and _shared(cfg, "ROI_MASK_HEAD"),
        share_keypoint_features=cfg.MODEL.KEYPOINT_ON and _shared(cfg, "ROI_KEYPOINT_HEAD"),
    )
