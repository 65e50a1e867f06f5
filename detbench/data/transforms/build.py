"""build_transforms: the INPUT.* keys -> the standard transform pipeline."""

from __future__ import annotations

from yacs.config import CfgNode

from .transforms import Compose, Normalize, RandomHorizontalFlip, Resize, ToTensor


def build_transforms(cfg: CfgNode, is_train: bool) -> Compose:
    """Resize -> (training) random horizontal flip -> ToTensor -> Normalize."""
    if is_train:
        resize = Resize(tuple(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN)
        flip_prob = cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN
    else:
        resize = Resize(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        flip_prob = 0.0
    steps = [resize]
    if flip_prob > 0:
        steps.append(RandomHorizontalFlip(flip_prob))
    steps += [ToTensor(), Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, cfg.INPUT.TO_BGR255)]
    return Compose(steps)
