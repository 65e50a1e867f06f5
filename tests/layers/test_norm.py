"""FrozenBatchNorm2d and the group_norm builder."""

import pytest
import torch
import torchvision
from torch import nn
from torch.testing import assert_close

from detbench.layers import FrozenBatchNorm2d, group_norm


def _random_bn(channels: int, seed: int = 0) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, eps=1e-5)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=g))
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)
    return bn.eval()


def test_frozen_bn_matches_eval_batchnorm_and_torchvision():
    bn = _random_bn(6)
    frozen = FrozenBatchNorm2d(6)
    frozen.load_state_dict(bn.state_dict())  # includes num_batches_tracked, which is dropped
    tv = torchvision.ops.FrozenBatchNorm2d(6)
    tv.load_state_dict(frozen.state_dict())
    x = torch.randn(3, 6, 5, 4, dtype=torch.float64)
    assert_close(frozen.double()(x), bn.double()(x))
    assert_close(frozen(x), tv.double()(x))


def test_frozen_bn_has_no_trainable_parameters_but_passes_gradients():
    frozen = FrozenBatchNorm2d(4)
    assert list(frozen.parameters()) == []
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    frozen.train()(x).sum().backward()
    # weight 1, var 1, eps 1e-5: dy/dx = 1 / sqrt(1 + 1e-5) everywhere.
    assert_close(x.grad, torch.full_like(x, (1 + 1e-5) ** -0.5))


def test_frozen_bn_empty_batch():
    y = FrozenBatchNorm2d(4)(torch.zeros(0, 4, 7, 7))
    assert y.shape == (0, 4, 7, 7)


def test_convert_frozen_batchnorm_replaces_nested_modules():
    bn = _random_bn(3, seed=1)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sequential(bn), nn.ReLU())
    x = torch.randn(2, 3, 4, 4)
    expected = model.eval()(x)
    converted = FrozenBatchNorm2d.convert_frozen_batchnorm(model)
    assert isinstance(converted[1][0], FrozenBatchNorm2d)
    assert_close(converted.train()(x), expected)
    single = FrozenBatchNorm2d.convert_frozen_batchnorm(_random_bn(3, seed=1))
    assert isinstance(single, FrozenBatchNorm2d)


@pytest.mark.parametrize(
    "kwargs, groups", [({"num_groups": 32}, 32), ({"num_groups": -1, "dim_per_group": 16}, 16)]
)
def test_group_norm_sizes(kwargs, groups):
    gn = group_norm(256, **kwargs)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == groups and gn.num_channels == 256


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_groups": 32, "dim_per_group": 8}, "exactly one"),
        ({"num_groups": -1, "dim_per_group": -1}, "exactly one"),
        ({"num_groups": 7}, "cannot be split into 7"),
        ({"num_groups": -1, "dim_per_group": 10}, "groups of 10"),
    ],
)
def test_group_norm_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        group_norm(256, **kwargs)
