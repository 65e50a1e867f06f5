"""Optimizer and learning-rate scheduler from the SOLVER config keys."""

from __future__ import annotations

import torch
from torch import nn
from yacs.config import CfgNode

from .lr_scheduler import WarmupMultiStepLR


def _is_bias(name: str) -> bool:
    """True for parameters called ``bias`` (last component of the dotted name)."""
    return name.rsplit(".", 1)[-1] == "bias"


def make_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.SGD:
    """SGD over the trainable parameters of ``model`` in two parameter groups.

    Weights: lr ``BASE_LR``, weight decay ``WEIGHT_DECAY``. Biases: lr
    ``BASE_LR * BIAS_LR_FACTOR``, weight decay ``WEIGHT_DECAY_BIAS``. Frozen
    parameters (``requires_grad=False``) are left out. Groups are ordered
    (weights, biases); an empty group is omitted.
    """
    s = cfg.SOLVER
    weights, biases = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (biases if _is_bias(name) else weights).append(param)
    if not weights and not biases:
        raise ValueError("make_optimizer: the model has no parameter with requires_grad=True")
    groups = [
        {"params": weights, "lr": s.BASE_LR, "weight_decay": s.WEIGHT_DECAY},
        {"params": biases, "lr": s.BASE_LR * s.BIAS_LR_FACTOR, "weight_decay": s.WEIGHT_DECAY_BIAS},
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM)


def make_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> WarmupMultiStepLR:
    """The :class:`WarmupMultiStepLR` the SOLVER keys describe; step it once per iteration."""
    s = cfg.SOLVER
    return WarmupMultiStepLR(
        optimizer,
        s.STEPS,
        gamma=s.GAMMA,
        warmup_factor=s.WARMUP_FACTOR,
        warmup_iters=s.WARMUP_ITERS,
        warmup_method=s.WARMUP_METHOD,
    )
