"""Samples a fixed-size, class-balanced set of positives and negatives per image."""

from __future__ import annotations

import torch
from torch import Tensor


class BalancedPositiveNegativeSampler:
    """Pick at most ``batch_size_per_image`` elements per image, of which at most
    ``int(batch_size_per_image * positive_fraction)`` are positives; negatives fill the rest
    (when there are enough of them).

    Random choice by ``torch.randperm`` (positives first, then negatives, image by image,
    the same draws as torchvision's sampler on the CPU), so ``torch.manual_seed`` makes it
    repeatable. The permutations are always drawn from the CPU generator and then moved to
    the labels' device, so that a seed selects the same samples on a CPU and on a GPU
    (tools/compare_devices.py relies on it); ``torch.where`` synchronises anyway.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        if batch_size_per_image <= 0:
            raise ValueError(f"batch_size_per_image must be > 0, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, labels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """``labels``: per image an [Ni] tensor, >= 1 positive, 0 negative, -1 ignored.

        Returns (pos, neg): per image bool masks [Ni] of the sampled positives / negatives.
        """
        pos_masks, neg_masks = [], []
        for labels_per_image in labels:
            positive = torch.where(labels_per_image >= 1)[0]
            negative = torch.where(labels_per_image == 0)[0]
            # int() truncates, as torchvision and maskrcnn-benchmark do.
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)

            pos_idx = positive[torch.randperm(positive.numel())[:num_pos].to(positive.device)]
            neg_idx = negative[torch.randperm(negative.numel())[:num_neg].to(negative.device)]

            pos_mask = torch.zeros_like(labels_per_image, dtype=torch.bool)
            neg_mask = torch.zeros_like(labels_per_image, dtype=torch.bool)
            pos_mask[pos_idx] = True
            neg_mask[neg_idx] = True
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks
