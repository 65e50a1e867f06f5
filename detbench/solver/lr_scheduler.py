"""Learning-rate schedules counted in iterations: a warm-up, then step decay or a cosine."""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler

WARMUP_METHODS = ("constant", "linear")


class WarmupMultiStepLR(LRScheduler):
    """``lr(it) = base_lr * warmup(it) * gamma ** (number of milestones <= it)``.

    ``it`` is the scheduler's ``last_epoch``, i.e. the number of ``step()`` calls
    so far (the trainer steps once per iteration). During the first
    ``warmup_iters`` iterations ``warmup(it)`` is ``warmup_factor`` ("constant")
    or grows linearly from ``warmup_factor`` at ``it = 0`` towards 1 at
    ``it = warmup_iters`` ("linear"); afterwards it is 1. The numbers equal
    maskrcnn-benchmark's scheduler of the same name.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_factor: float = 1.0 / 3,
        warmup_iters: int = 500,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        milestones = [int(m) for m in milestones]
        # Sorted order is required (as in maskrcnn-benchmark); a repeated step applies gamma twice.
        if milestones != sorted(milestones):
            raise ValueError(f"SOLVER.STEPS must be in increasing order, got {tuple(milestones)}")
        if warmup_method not in WARMUP_METHODS:
            raise ValueError(f"SOLVER.WARMUP_METHOD must be one of {WARMUP_METHODS}, got {warmup_method!r}")
        if warmup_iters < 0:
            raise ValueError(f"SOLVER.WARMUP_ITERS must be >= 0, got {warmup_iters}")
        self.milestones = milestones
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def _warmup(self, it: int) -> float:
        """Multiplier of the warm-up phase at iteration ``it`` (1 once it is over)."""
        if it >= self.warmup_iters:
            return 1.0
        if self.warmup_method == "constant":
            return self.warmup_factor
        alpha = it / self.warmup_iters
        return self.warmup_factor * (1 - alpha) + alpha

    def get_lr(self) -> list[float]:
        it = self.last_epoch
        # bisect_right: a milestone m applies from iteration m itself onwards.
        decay = self.gamma ** bisect_right(self.milestones, it)
        return [base_lr * self._warmup(it) * decay for base_lr in self.base_lrs]


class WarmupCosineLR(WarmupMultiStepLR):
    """``lr(it) = warmup(it) * (end + (base_lr - end) * (1 + cos(pi * min(it, max_iter) / max_iter)) / 2)``.

    The same warm-up as :class:`WarmupMultiStepLR` (applied to the cosine, as detectron2's
    WarmupCosineLR does); the cosine falls from ``base_lr`` at iteration 0 to ``end_lr`` at
    ``max_iter`` and stays there. ``end_lr`` is the first group's final rate; every other group
    ends at the same fraction of its own base rate (bias groups keep BIAS_LR_FACTOR).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        end_lr: float = 0.0,
        warmup_factor: float = 1.0 / 3,
        warmup_iters: int = 500,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        if max_iter <= 0:
            raise ValueError(f"SOLVER.MAX_ITER must be > 0, got {max_iter}")
        if end_lr < 0:
            raise ValueError(f"SOLVER.BASE_LR_END must be >= 0, got {end_lr}")
        self.max_iter = max_iter
        self.end_lr = end_lr
        super().__init__(optimizer, (), 1.0, warmup_factor, warmup_iters, warmup_method, last_epoch)

    def get_lr(self) -> list[float]:
        it = min(self.last_epoch, self.max_iter)
        cosine = (1 + math.cos(math.pi * it / self.max_iter)) / 2
        first = self.base_lrs[0]
        return [
            self._warmup(self.last_epoch) * (self.end_lr * base / first + (base - self.end_lr * base / first) * cosine)
            for base in self.base_lrs
        ]
