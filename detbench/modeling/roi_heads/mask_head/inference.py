"""Mask post-processing: per-class logits -> the detection's mask probabilities, optionally
pasted into the image (the pasting itself lives in detbench.structures.mask_ops)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from detbench.structures.bounding_box import BoxList
from detbench.structures.mask_ops import Masker, paste_masks_in_image, paste_masks_in_image_dense, size_sorted_chunks

__all__ = ["MaskPostProcessor", "Masker", "paste_masks_in_image", "paste_masks_in_image_dense", "size_sorted_chunks"]


class MaskPostProcessor(nn.Module):
    """Mask logits -> a "mask" field on each detection: the sigmoid of its class's channel,
    [K, 1, M, M], or with a ``masker`` the mask pasted into the image, [K, 1, H, W].

    ``aligned``: the pixel model the masks were trained with (MODEL.ROI_MASK_HEAD.ALIGNED_MASKS),
    which whoever pastes box-relative masks (the evaluation, the Predictor) must use.
    """

    def __init__(self, masker: Masker | None = None, aligned: bool = False) -> None:
        super().__init__()
        self.masker = masker
        self.aligned = aligned

    def forward(self, mask_logits: Tensor, detections: Sequence[BoxList]) -> list[BoxList]:
        """mask_logits: [sum K_i, num_classes, M, M]; detections: BoxLists with "labels"."""
        labels = torch.cat([d.get_field("labels") for d in detections])
        rows = torch.arange(labels.shape[0], device=labels.device)
        probs = mask_logits[rows, labels][:, None].sigmoid()
        results = []
        for prob, det in zip(probs.split([len(d) for d in detections]), detections):
            if self.masker is not None:
                prob = self.masker(prob, det)
            out = BoxList(det.bbox, det.size, det.mode)
            out.extra_fields = dict(det.extra_fields)
            out.add_field("mask", prob)
            results.append(out)
        return results
