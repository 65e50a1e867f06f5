"""GeneralizedRCNN: backbone -> RPN -> RoI heads."""

from __future__ import annotations

import torch
from torch import nn

from detbench.structures.bounding_box import BoxList
from detbench.structures.image_list import ImageList, to_image_list


class GeneralizedRCNN(nn.Module):
    """Faster / Mask / Keypoint R-CNN and RPN-only models.

    Input: normalised images (an ImageList, a [N, 3, H, W] tensor or a list of
    [3, Hi, Wi] tensors) and, in training, one target BoxList per image.
    Training returns a dict of scalar losses; evaluation returns one BoxList per
    image in input-image coordinates with "scores", "labels" and, where the model
    has them, "mask" and "keypoints" (RPN-only: the proposals, with "objectness").
    """

    def __init__(
        self, backbone: nn.Module, rpn: nn.Module, roi_heads: nn.Module | None, size_divisibility: int = 0
    ) -> None:
        super().__init__()
        # Tensors given directly are zero-padded to this multiple (the data loader does it for batches).
        self.size_divisibility = size_divisibility
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    def forward(
        self,
        images: ImageList | torch.Tensor | list[torch.Tensor],
        targets: list[BoxList] | None = None,
    ) -> dict[str, torch.Tensor] | list[BoxList]:
        if self.training and targets is None:
            raise ValueError("GeneralizedRCNN in training mode needs targets (one BoxList per image)")
        images = to_image_list(images, self.size_divisibility)
        if targets is not None and len(targets) != len(images.image_sizes):
            raise ValueError(f"got {len(targets)} targets for {len(images.image_sizes)} images")
        features = self.backbone(images.tensors)
        proposals, proposal_losses = self.rpn(images, features, targets)
        if self.roi_heads is None:
            result, detector_losses = proposals, {}
        else:
            _, result, detector_losses = self.roi_heads(features, proposals, targets)
        if self.training:
            return {**detector_losses, **proposal_losses}
        return result
