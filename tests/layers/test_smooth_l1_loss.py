"""smooth_l1_loss against hand-derived values and torch.nn.functional."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from detbench.layers import smooth_l1_loss


def test_hand_derived_values():
    input = torch.tensor([0.0, 0.05, -0.5, 2.0], dtype=torch.float64)
    target = torch.zeros(4, dtype=torch.float64)
    beta = 0.1
    # |d| < beta: 0.5 d^2 / beta; else |d| - beta / 2.
    expected = torch.tensor([0.0, 0.5 * 0.0025 / 0.1, 0.5 - 0.05, 2.0 - 0.05], dtype=torch.float64)
    assert_close(smooth_l1_loss(input, target, beta=beta, size_average=False), expected.sum())
    assert_close(smooth_l1_loss(input, target, beta=beta), expected.mean())


@pytest.mark.parametrize("beta", [1.0 / 9, 1.0, 0.0])
def test_matches_torch(beta):
    g = torch.Generator().manual_seed(0)
    input, target = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g)
    expected = F.smooth_l1_loss(input, target, beta=beta, reduction="sum")
    assert_close(smooth_l1_loss(input, target, beta=beta, size_average=False), expected)


def test_gradient_is_finite_at_zero_difference_with_beta_zero():
    x = torch.zeros(3, requires_grad=True)
    smooth_l1_loss(x, torch.zeros(3), beta=0.0).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [dict(beta=-1.0), dict(target=torch.zeros(3))])
def test_rejects_bad_arguments(bad):
    kwargs = {"input": torch.zeros(2), "target": torch.zeros(2), **bad}
    with pytest.raises(ValueError):
        smooth_l1_loss(**kwargs)
