"""conv2d_frozen_bn: a convolution with a FrozenBatchNorm2d folded in equals the pair, forward and backward."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detbench.layers import FrozenBatchNorm2d
from detbench.layers.norm import conv2d_frozen_bn


def _pair(in_ch: int, out_ch: int, bias: bool, seed: int = 0, **conv_kwargs) -> tuple[nn.Conv2d, FrozenBatchNorm2d]:
    """A float64 conv and a frozen batch norm with random statistics (variance far from 1)."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(in_ch, out_ch, bias=bias, **conv_kwargs).double()
    bn = FrozenBatchNorm2d(out_ch, eps=1e-5).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
        if bias:
            conv.bias.copy_(torch.randn(out_ch, generator=g, dtype=torch.float64))
        bn.weight.copy_(torch.rand(out_ch, generator=g, dtype=torch.float64) + 0.5)
        bn.bias.copy_(torch.randn(out_ch, generator=g, dtype=torch.float64))
        bn.running_mean.copy_(torch.randn(out_ch, generator=g, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(out_ch, generator=g, dtype=torch.float64) * 3 + 0.1)
    return conv, bn


def _reference(x: torch.Tensor, conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> torch.Tensor:
    """The unfolded pair, the batch norm written out from its definition."""
    y = conv(x)
    std = (bn.running_var + bn.eps).sqrt().view(1, -1, 1, 1)
    return (y - bn.running_mean.view(1, -1, 1, 1)) / std * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


CONVS = [
    dict(in_ch=3, out_ch=5, bias=False, kernel_size=1),
    dict(in_ch=4, out_ch=6, bias=True, kernel_size=3, stride=2, padding=1),
    dict(in_ch=4, out_ch=8, bias=False, kernel_size=3, padding=2, dilation=2, groups=2),
    dict(in_ch=3, out_ch=4, bias=False, kernel_size=7, stride=2, padding=3),
]


@pytest.mark.parametrize("spec", CONVS, ids=lambda s: f"k{s['kernel_size']}-bias{s['bias']}")
def test_folded_equals_pair_forward_and_backward(spec):
    spec = dict(spec)
    conv, bn = _pair(spec.pop("in_ch"), spec.pop("out_ch"), spec.pop("bias"), **spec)
    # Non-contiguous input: a transposed view.
    x = torch.randn(2, conv.in_channels, 13, 11, dtype=torch.float64).transpose(2, 3).requires_grad_()
    grad_out = None
    outputs, grads = [], []
    for fn in (lambda: conv2d_frozen_bn(x, conv, bn), lambda: _reference(x, conv, bn)):
        conv.zero_grad(set_to_none=True)
        x.grad = None
        y = fn()
        grad_out = torch.randn_like(y) if grad_out is None else grad_out
        y.backward(grad_out)
        outputs.append(y.detach())
        grads.append([x.grad] + [p.grad for p in conv.parameters()])
    assert_close(outputs[0], outputs[1])
    for got, expected in zip(*grads):
        assert_close(got, expected)
    assert not any(b.requires_grad for b in bn.buffers())  # the folding does not make them trainable


def test_folded_gradcheck():
    conv, bn = _pair(2, 3, bias=True, kernel_size=3, padding=1)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d_frozen_bn(x, conv, bn), (x, conv.weight, conv.bias))


def test_folded_follows_loaded_statistics_and_empty_batches():
    conv, bn = _pair(3, 4, bias=False, kernel_size=1)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    before = conv2d_frozen_bn(x, conv, bn)
    other = _pair(3, 4, bias=False, seed=1, kernel_size=1)[1]
    bn.load_state_dict(other.state_dict())  # nothing is cached: the next call uses the new buffers
    assert_close(conv2d_frozen_bn(x, conv, bn), _reference(x, conv, bn))
    assert not torch.allclose(before, conv2d_frozen_bn(x, conv, bn))
    assert conv2d_frozen_bn(x[:0], conv, bn).shape == (0, 4, 4, 4)


def test_folded_float32_close_to_pair():
    """In float32 the two round differently; the difference stays at float32 precision."""
    conv, bn = _pair(16, 32, bias=False, kernel_size=3, padding=1)
    conv, bn = conv.float(), bn.float()
    x = torch.randn(2, 16, 20, 20)
    assert_close(conv2d_frozen_bn(x, conv, bn), bn(conv(x)), rtol=1e-4, atol=1e-4)
