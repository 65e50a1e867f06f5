"""build_transforms: the INPUT.* keys -> the standard transform pipeline."""

from __future__ import annotations

from yacs.config import CfgNode

from .augment import ColorJitter, ScaleJitterCrop
from .torchvision_resize import TorchvisionResize
from .transforms import Compose, Normalize, RandomHorizontalFlip, Resize, ToTensor


RESIZE_MODES = ("pil", "torchvision")


def _resize(cfg: CfgNode, min_size, max_size: int) -> list:
    """The resize step(s) of INPUT.RESIZE_MODE; "torchvision" resizes the tensor, so ToTensor comes first."""
    mode = cfg.INPUT.RESIZE_MODE
    if mode not in RESIZE_MODES:
        raise ValueError(f"INPUT.RESIZE_MODE {mode!r}: expected one of {RESIZE_MODES}")
    if mode == "pil":
        return [Resize(min_size, max_size)]
    return [ToTensor(), TorchvisionResize(min_size, max_size)]


def build_transforms(cfg: CfgNode, is_train: bool) -> Compose:
    """Training: Resize (or ScaleJitterCrop with INPUT.SCALE_JITTER) -> random horizontal flip
    -> ColorJitter (when any INPUT.COLOR_JITTER factor is set) -> ToTensor -> Normalize.
    Testing: Resize -> ToTensor -> Normalize. With INPUT.RESIZE_MODE "torchvision", ToTensor
    comes first and TorchvisionResize resizes the tensor."""
    i = cfg.INPUT
    if not is_train:
        steps = _resize(cfg, i.MIN_SIZE_TEST, i.MAX_SIZE_TEST)
    else:
        jitter, color = i.SCALE_JITTER, i.COLOR_JITTER
        if jitter.ENABLED and i.RESIZE_MODE != "pil":
            raise ValueError(f"INPUT.SCALE_JITTER.ENABLED needs INPUT.RESIZE_MODE 'pil', got {i.RESIZE_MODE!r}")
        steps = ([ScaleJitterCrop(jitter.TARGET_SIZE, jitter.MIN_SCALE, jitter.MAX_SCALE)] if jitter.ENABLED
                 else _resize(cfg, tuple(i.MIN_SIZE_TRAIN), i.MAX_SIZE_TRAIN))
        if i.HORIZONTAL_FLIP_PROB_TRAIN > 0:
            steps.append(RandomHorizontalFlip(i.HORIZONTAL_FLIP_PROB_TRAIN))
        factors = (color.BRIGHTNESS, color.CONTRAST, color.SATURATION, color.HUE)
        if any(f > 0 for f in factors):
            steps.append(ColorJitter(*factors))
    if not any(isinstance(step, ToTensor) for step in steps):
        steps.append(ToTensor())
    steps.append(Normalize(i.PIXEL_MEAN, i.PIXEL_STD, i.TO_BGR255))
    return Compose(steps)
