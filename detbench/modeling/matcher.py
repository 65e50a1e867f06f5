"""Matcher: assigns each prediction (anchor, proposal) to at most one ground-truth element."""

from __future__ import annotations

import torch
from torch import Tensor


class Matcher:
    """Match predictions to ground truth from an [M_gt, N_pred] quality matrix (e.g. IoU).

    Each prediction takes the ground truth of highest quality (the lowest index on ties).
    The match is kept if that quality is >= ``high_threshold``; otherwise the prediction
    gets ``BETWEEN_THRESHOLDS`` (-2) when the quality is in [low_threshold, high_threshold)
    and ``BELOW_LOW_THRESHOLD`` (-1) below ``low_threshold``.

    With ``allow_low_quality_matches``, every prediction that reaches the best quality of
    some ground truth (ties included) gets back its own best match even if it was below the
    thresholds. As in torchvision and maskrcnn-benchmark, this also applies when that best
    quality is 0 (a ground truth overlapping nothing).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False) -> None:
        if low_threshold > high_threshold:
            raise ValueError(f"Matcher: low_threshold {low_threshold} > high_threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """[M_gt, N_pred] qualities -> [N_pred] int64: a gt index in [0, M_gt) or -1 / -2.

        With no ground truth (M_gt = 0) every prediction is BELOW_LOW_THRESHOLD.
        """
        if match_quality_matrix.dim() != 2:
            raise ValueError(f"Matcher needs an [M_gt, N_pred] matrix, got {tuple(match_quality_matrix.shape)}")
        num_gt, num_pred = match_quality_matrix.shape
        device = match_quality_matrix.device
        if num_gt == 0 or num_pred == 0:
            return torch.full((num_pred,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=device)

        # max over dim 0 returns the first (lowest) gt index among equal qualities.
        matched_vals, matches = match_quality_matrix.max(dim=0)
        best_matches = matches.clone() if self.allow_low_quality_matches else None

        below = matched_vals < self.low_threshold
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[below] = self.BELOW_LOW_THRESHOLD
        matches[between] = self.BETWEEN_THRESHOLDS

        if best_matches is not None:
            self._restore_low_quality_matches(matches, best_matches, match_quality_matrix)
        return matches

    @staticmethod
    def _restore_low_quality_matches(matches: Tensor, best_matches: Tensor, quality: Tensor) -> None:
        """In place: predictions that are the best of some gt (with ties) get their best match back."""
        best_per_gt = quality.max(dim=1).values  # [M_gt]
        is_best_for_some_gt = (quality == best_per_gt[:, None]).any(dim=0)  # [N_pred]
        matches[is_best_for_some_gt] = best_matches[is_best_for_some_gt]
