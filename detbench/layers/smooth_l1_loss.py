"""Smooth L1 (Huber-like) loss used for box regression."""

from __future__ import annotations

import torch


def smooth_l1_loss(
    input: torch.Tensor, target: torch.Tensor, beta: float = 1.0 / 9, size_average: bool = True
) -> torch.Tensor:
    """Elementwise ``0.5 * d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 * beta``; d = input - target.

    ``beta = 0`` gives plain L1. Returns the mean over all elements when
    ``size_average`` (maskrcnn-benchmark's name), else the sum. Shapes of
    ``input`` and ``target`` must match.
    """
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    if input.shape != target.shape:
        raise ValueError(f"smooth_l1_loss: shapes differ, {tuple(input.shape)} vs {tuple(target.shape)}")
    diff = torch.abs(input - target)
    if beta == 0:
        loss = diff  # the quadratic zone is empty; avoids dividing by zero below
    else:
        loss = torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta)
    return loss.mean() if size_average else loss.sum()
