"""Conv2d / ConvTranspose2d / interpolate on ordinary and empty batches."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from detbench.layers import Conv2d, ConvTranspose2d, interpolate


def test_conv2d_applies_norm_then_activation():
    torch.manual_seed(0)
    conv = Conv2d(3, 4, 3, padding=1, bias=False, norm=nn.GroupNorm(2, 4), activation=F.relu)
    x = torch.randn(2, 3, 6, 5)
    expected = F.relu(F.group_norm(F.conv2d(x, conv.weight, padding=1), 2, conv.norm.weight, conv.norm.bias))
    assert_close(conv(x), expected)


@pytest.mark.parametrize(
    "layer, out_shape",
    [
        (Conv2d(4, 8, 3, padding=1, norm=nn.GroupNorm(2, 8), activation=F.relu), (0, 8, 7, 7)),
        (Conv2d(4, 8, 3, stride=2, padding=1), (0, 8, 4, 4)),
        (ConvTranspose2d(4, 8, 2, stride=2), (0, 8, 14, 14)),
    ],
)
def test_layers_accept_empty_batches_and_give_zero_grads(layer, out_shape):
    x = torch.zeros(0, 4, 7, 7, requires_grad=True)
    y = layer(x)
    assert y.shape == out_shape
    y.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert_close(p.grad, torch.zeros_like(p))


@pytest.mark.parametrize("kwargs", [{"scale_factor": 2, "mode": "nearest"}, {"size": (14, 9), "mode": "bilinear"}])
def test_interpolate_empty_batch(kwargs):
    x = torch.zeros(0, 3, 7, 7, requires_grad=True)
    y = interpolate(x, **kwargs)
    assert y.shape[:2] == (0, 3) and y.shape[2] == 14
    y.sum().backward()
    assert x.grad.shape == x.shape
