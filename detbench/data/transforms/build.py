"""build_transforms: the INPUT.* keys -> the standard transform pipeline."""

from __future__ import annotations

from yacs.config import CfgNode

from .augment import ColorJitter, ScaleJitterCrop
from .transforms import Compose, Normalize, RandomHorizontalFlip, Resize, ToTensor


def build_transforms(cfg: CfgNode, is_train: bool) -> Compose:
    """Training: Resize (or ScaleJitterCrop with INPUT.SCALE_JITTER) -> random horizontal flip
    -> ColorJitter (when any INPUT.COLOR_JITTER factor is set) -> ToTensor -> Normalize.
    Testing: Resize -> ToTensor -> Normalize."""
    i = cfg.INPUT
    if not is_train:
        steps = [Resize(i.MIN_SIZE_TEST, i.MAX_SIZE_TEST)]
    else:
        jitter, color = i.SCALE_JITTER, i.COLOR_JITTER
        steps = [ScaleJitterCrop(jitter.TARGET_SIZE, jitter.MIN_SCALE, jitter.MAX_SCALE) if jitter.ENABLED
                 else Resize(tuple(i.MIN_SIZE_TRAIN), i.MAX_SIZE_TRAIN)]
        if i.HORIZONTAL_FLIP_PROB_TRAIN > 0:
            steps.append(RandomHorizontalFlip(i.HORIZONTAL_FLIP_PROB_TRAIN))
        factors = (color.BRIGHTNESS, color.CONTRAST, color.SATURATION, color.HUE)
        if any(f > 0 for f in factors):
            steps.append(ColorJitter(*factors))
    steps += [ToTensor(), Normalize(i.PIXEL_MEAN, i.PIXEL_STD, i.TO_BGR255)]
    return Compose(steps)
