"""Optimizer, learning-rate schedule and gradient clipping built from the SOLVER config keys."""

from .build import make_gradient_clipper, make_lr_scheduler, make_optimizer, parameter_groups
from .lr_scheduler import WarmupCosineLR, WarmupMultiStepLR

__all__ = ["WarmupCosineLR", "WarmupMultiStepLR", "make_gradient_clipper", "make_lr_scheduler", "make_optimizer",
           "parameter_groups"]
