"""Deformable convolutions (detbench.layers.dcn) against nn.Conv2d and a slow bilinear reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detbench.layers.dcn import DeformConv, DFConv2d

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# (stride, dilation, groups, deformable_groups)
GEOMETRIES = [(1, 1, 1, 1), (2, 1, 2, 1), (1, 2, 1, 2), (2, 2, 2, 2)]


def _bilinear(image: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """image [C, H, W] at the real point (y, x): the four nearest pixels, those outside counting as 0."""
    _, height, width = image.shape
    y0, x0 = int(torch.floor(torch.tensor(y))), int(torch.floor(torch.tensor(x)))
    value = image.new_zeros(image.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                value = value + wy * wx * image[:, yy, xx]
    return value


def deform_conv_reference(x, offset, weight, stride, padding, dilation, groups, mask=None):
    """Deformable convolution by definition, one output pixel and kernel tap at a time.

    x [N, C, H, W], offset [N, 2 G K, H', W'] (dy, dx per group and tap), weight [O, C / groups, kh, kw],
    mask [N, G K, H', W'] or None -> [N, O, H', W'].
    """
    n, c, _, _ = x.shape
    out_c, _, kh, kw = weight.shape
    taps, h_out, w_out = kh * kw, offset.shape[2], offset.shape[3]
    dg = offset.shape[1] // (2 * taps)
    out = x.new_zeros(n, out_c, h_out, w_out)
    for b in range(n):
        for i in range(h_out):
            for j in range(w_out):
                # columns [C, K]: the sampled input of every channel at every tap
                columns = x.new_zeros(c, taps)
                for g in range(dg):
                    channels = slice(g * c // dg, (g + 1) * c // dg)
                    for t in range(taps):
                        ki, kj = divmod(t, kw)
                        dy, dx = offset[b, 2 * (g * taps + t), i, j], offset[b, 2 * (g * taps + t) + 1, i, j]
                        y = i * stride - padding + ki * dilation + float(dy)
                        xx = j * stride - padding + kj * dilation + float(dx)
                        sample = _bilinear(x[b, channels], y, xx)
                        columns[channels, t] = sample * (1.0 if mask is None else mask[b, g * taps + t, i, j])
                per_group_in, per_group_out = c // groups, out_c // groups
                for gr in range(groups):
                    cols = columns[gr * per_group_in:(gr + 1) * per_group_in]  # [C/groups, K]
                    w = weight[gr * per_group_out:(gr + 1) * per_group_out].reshape(per_group_out, per_group_in, taps)
                    out[b, gr * per_group_out:(gr + 1) * per_group_out, i, j] = (w * cols).sum(dim=(1, 2))
    return out


def _dfconv(stride, dilation, groups, dg, modulated, in_c=4, out_c=6) -> DFConv2d:
    return DFConv2d(in_c, out_c, modulated=modulated, stride=stride, dilation=dilation, groups=groups,
                    deformable_groups=dg).double()


def _plain_conv(layer: DFConv2d) -> nn.Conv2d:
    conv = layer.conv
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, groups=conv.groups, bias=False).double()
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
    return plain


@pytest.mark.parametrize("stride, dilation, groups, dg", GEOMETRIES)
@pytest.mark.parametrize("modulated", [False, True])
def test_new_layer_is_the_plain_conv(stride, dilation, groups, dg, modulated):
    torch.manual_seed(0)
    layer = _dfconv(stride, dilation, groups, dg, modulated)
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    # v2 starts with mask logits 0, i.e. every sample weighted sigmoid(0) = 0.5
    factor = 0.5 if modulated else 1.0
    assert_close(layer(x), factor * _plain_conv(layer)(x))


@pytest.mark.parametrize("modulated, per_tap", [(False, 2), (True, 3)])
@pytest.mark.parametrize("dg", [1, 2])
def test_offset_conv_shape_and_zero_start(modulated, per_tap, dg):
    layer = DFConv2d(8, 8, modulated=modulated, deformable_groups=dg, stride=2, dilation=2)
    assert layer.offset.out_channels == dg * per_tap * 9  # 18 / 27 per deformable group
    assert (layer.offset.stride, layer.offset.padding, layer.offset.dilation) == ((2, 2), (2, 2), (2, 2))
    assert not layer.offset.weight.any() and not layer.offset.bias.any()
    assert layer.conv.bias is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stride, dilation, groups, dg", GEOMETRIES)
@pytest.mark.parametrize("modulated", [False, True])
def test_matches_bilinear_reference_with_nonzero_offsets(stride, dilation, groups, dg, modulated, device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 5, 4, dtype=torch.float64, generator=g)
    layer = DeformConv(4, 6, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups,
                       deformable_groups=dg).double()
    h_out, w_out = layer.output_size(5, 4)
    # offsets up to +-2.5 pixels: samples between pixels and past the border
    offset = (torch.rand(1, 2 * dg * 9, h_out, w_out, dtype=torch.float64, generator=g) - 0.5) * 5
    mask = torch.rand(1, dg * 9, h_out, w_out, dtype=torch.float64, generator=g) if modulated else None
    expected = deform_conv_reference(x, offset, layer.weight.detach(), stride, dilation, dilation, groups, mask)
    on_device = layer.to(device)(x.to(device), offset.to(device), None if mask is None else mask.to(device))
    assert_close(on_device.cpu(), expected)


def test_dfconv2d_splits_offsets_and_mask_as_documented():
    torch.manual_seed(2)
    layer = _dfconv(1, 1, 1, 2, True)
    nn.init.normal_(layer.offset.weight, std=0.3)
    nn.init.normal_(layer.offset.bias, std=0.3)
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    predicted = layer.offset(x).detach()
    offset, mask = predicted[:, :36], predicted[:, 36:].sigmoid()
    expected = deform_conv_reference(x, offset, layer.conv.weight.detach(), 1, 1, 1, 1, mask)
    assert_close(layer(x), expected)


@pytest.mark.parametrize("modulated", [False, True])
def test_gradients_reach_offset_and_mask_convs(modulated):
    torch.manual_seed(3)
    layer = _dfconv(1, 1, 1, 1, modulated)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    (layer(x) ** 2).sum().backward()
    grad = layer.offset.weight.grad
    assert grad is not None and layer.conv.weight.grad is not None
    assert grad[:18].abs().sum() > 0, "no gradient reached the offset channels"
    if modulated:
        assert grad[18:].abs().sum() > 0, "no gradient reached the mask channels"


@pytest.mark.parametrize("modulated", [False, True])
def test_gradcheck_with_nonzero_offsets(modulated):
    torch.manual_seed(4)
    layer = DFConv2d(2, 2, modulated=modulated, deformable_groups=2).double()
    nn.init.normal_(layer.offset.weight, std=0.2)
    nn.init.normal_(layer.offset.bias, std=0.5)  # away from integer sample points
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    # The offset conv's bias moves every offset and mask logit; checking it (not its much larger
    # weight) covers the offset/mask split and the sigmoid at a tenth of the cost.
    params = (layer.conv.weight.detach().requires_grad_(), layer.offset.bias.detach().requires_grad_())

    def run(inp, weight, offset_bias):
        return torch.func.functional_call(layer, {"conv.weight": weight, "offset.bias": offset_bias}, (inp,))

    assert torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-5)


def test_empty_batch_and_non_contiguous_input():
    layer = _dfconv(2, 1, 1, 1, True)
    assert layer(torch.zeros(0, 4, 9, 9, dtype=torch.float64)).shape == (0, 6, 5, 5)
    x = torch.randn(1, 4, 8, 6, dtype=torch.float64).transpose(2, 3)
    assert_close(layer(x), layer(x.contiguous()))


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match="deformable_groups 3"):
        DFConv2d(8, 8, deformable_groups=3)
    with pytest.raises(ValueError, match="groups 3"):
        DeformConv(8, 8, groups=3)
