"""Matcher: hand-derived cases (thresholds, low-quality matches, ties, empty inputs), torchvision."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection._utils import Matcher as TVMatcher

from detbench.modeling.matcher import Matcher

BELOW, BETWEEN = Matcher.BELOW_LOW_THRESHOLD, Matcher.BETWEEN_THRESHOLDS


def test_thresholds():
    quality = torch.tensor([[0.9, 0.5, 0.1, 0.0, 0.3], [0.2, 0.6, 0.7, 0.1, 0.0]])
    got = Matcher(0.7, 0.3)(quality)
    # 0.9 -> gt 0; 0.6 is between; 0.7 reaches the high threshold (>=); 0.1 is below; 0.3 is
    # exactly the low threshold, so between.
    assert got.dtype == torch.int64
    assert got.tolist() == [0, BETWEEN, 1, BELOW, BETWEEN]


def test_low_quality_matches_with_ties():
    quality = torch.tensor([[0.4, 0.2, 0.0], [0.1, 0.5, 0.5]])
    assert Matcher(0.7, 0.3)(quality).tolist() == [BETWEEN, BETWEEN, BETWEEN]
    # gt 0's best prediction is 0; gt 1 has two equally good predictions, 1 and 2: all matched.
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality).tolist() == [0, 1, 1]


def test_low_quality_match_keeps_the_predictions_own_best_gt():
    # Prediction 0 is gt 0's best (0.4), but its own best gt is gt 1 (0.5): it gets gt 1.
    quality = torch.tensor([[0.4, 0.1], [0.5, 0.2]])
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality).tolist() == [1, BELOW]


def test_tie_between_gts_takes_the_lowest_index():
    quality = torch.tensor([[0.1, 0.8], [0.8, 0.8], [0.8, 0.2]])
    assert Matcher(0.7, 0.3)(quality).tolist() == [1, 0]


def test_empty_gt_and_empty_predictions():
    got = Matcher(0.7, 0.3, allow_low_quality_matches=True)(torch.zeros(0, 5))
    assert got.dtype == torch.int64 and got.tolist() == [BELOW] * 5
    got = Matcher(0.7, 0.3, allow_low_quality_matches=True)(torch.zeros(3, 0))
    assert got.dtype == torch.int64 and got.shape == (0,)


def test_does_not_modify_input_and_rejects_bad_args():
    quality = torch.tensor([[0.4, 0.9]])
    before = quality.clone()
    Matcher(0.7, 0.3, True)(quality)
    assert_close(quality, before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match="M_gt, N_pred"):
        Matcher(0.7, 0.3)(torch.zeros(4))


@pytest.mark.parametrize("allow_low", [False, True])
def test_equals_torchvision(allow_low):
    g = torch.Generator().manual_seed(0)
    # Quantised qualities so that ties between gts and between predictions occur.
    quality = (torch.rand(6, 300, generator=g) * 20).floor() / 20
    quality[2] *= 0.3  # a gt whose best match is low quality
    expected = TVMatcher(0.7, 0.3, allow_low)(quality.clone())
    assert_close(Matcher(0.7, 0.3, allow_low)(quality), expected, rtol=0, atol=0)
