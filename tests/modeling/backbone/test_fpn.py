"""FPN: parity with torchvision.ops.FeaturePyramidNetwork, the ReLU variant, names, init, empty input."""

import math
from collections import OrderedDict
from functools import partial

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.testing import assert_close

from detbench.layers import group_norm
from detbench.modeling.backbone import FPN, LastLevelMaxPool

IN_CHANNELS = [8, 16, 32]
# Odd sides on purpose: upsampling by exactly 2 would not give the lateral's size.
SIZES = [(17, 23), (9, 12), (5, 6)]


def _features(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=g, dtype=torch.float64) for c, (h, w) in zip(IN_CHANNELS, SIZES)]


def _torchvision_to_fpn(state: dict, with_norm: bool) -> dict:
    """inner_blocks.i.j.p / layer_blocks.i.j.p -> fpn_inner{i+1}[.j].p / fpn_layer{i+1}[.j].p."""
    renamed = {}
    for key, value in state.items():
        kind, i, j, param = key.split(".")
        prefix = {"inner_blocks": "fpn_inner", "layer_blocks": "fpn_layer"}[kind] + str(int(i) + 1)
        renamed[f"{prefix}.{j}.{param}" if with_norm else f"{prefix}.{param}"] = value
    return renamed


@pytest.mark.parametrize("with_norm", [False, True])
def test_fpn_matches_torchvision(with_norm):
    torch.manual_seed(0)
    reference = torchvision.ops.FeaturePyramidNetwork(
        IN_CHANNELS,
        12,
        extra_blocks=torchvision.ops.feature_pyramid_network.LastLevelMaxPool(),
        norm_layer=partial(nn.GroupNorm, 4) if with_norm else None,
    ).double()
    with torch.no_grad():  # non-trivial biases and GroupNorm affine parameters
        for name, p in reference.named_parameters():
            if not name.endswith("0.weight"):
                p.copy_(torch.randn_like(p))
    norm = partial(group_norm, num_groups=4) if with_norm else None
    fpn = FPN(IN_CHANNELS, 12, norm=norm, top_blocks=LastLevelMaxPool()).double()
    fpn.load_state_dict(_torchvision_to_fpn(reference.state_dict(), with_norm))
    feats = _features()
    with torch.no_grad():
        expected = list(reference(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())
        got = fpn(feats)
    assert [tuple(t.shape[-2:]) for t in got] == SIZES + [(3, 3)]
    assert len(got) == len(expected) == 4
    for g, e in zip(got, expected):
        assert_close(g, e)


def test_fpn_relu_matches_hand_reference():
    fpn = FPN([4, 6], 5, use_relu=True).double()
    with torch.no_grad():
        for p in fpn.parameters():
            p.copy_(torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    c1 = torch.randn(2, 4, 8, 6, generator=g, dtype=torch.float64)
    c2 = torch.randn(2, 6, 4, 3, generator=g, dtype=torch.float64)

    def conv(x, block, padding):
        return F.relu(F.conv2d(x, block[0].weight, block[0].bias, padding=padding))

    lateral2 = conv(c2, fpn.fpn_inner2, 0)
    # Sides here are exact halves, so nearest upsampling repeats every cell twice per axis.
    top_down = conv(c1, fpn.fpn_inner1, 0) + lateral2.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    p1, p2 = fpn([c1, c2])
    assert_close(p2, conv(lateral2, fpn.fpn_layer2, 1))
    assert_close(p1, conv(top_down, fpn.fpn_layer1, 1))


def test_fpn_parameter_names_follow_maskrcnn_benchmark():
    plain = set(FPN([4, 6], 8).state_dict())
    assert plain == {f"fpn_{k}{i}.{p}" for k in ("inner", "layer") for i in (1, 2) for p in ("weight", "bias")}
    gn = set(FPN([4, 6], 8, norm=partial(group_norm, num_groups=2), use_relu=True).state_dict())
    params = ("0.weight", "1.weight", "1.bias")  # conv without bias, then GroupNorm
    assert gn == {f"fpn_{k}{i}.{p}" for k in ("inner", "layer") for i in (1, 2) for p in params}
    relu = set(FPN([4, 6], 8, use_relu=True).state_dict())
    assert "fpn_inner1.0.bias" in relu and len(relu) == 8


def test_fpn_init_kaiming_uniform_zero_bias():
    fpn = FPN([64, 128], 32)
    for name, p in fpn.named_parameters():
        if name.endswith("bias"):
            assert_close(p, torch.zeros_like(p))
        else:
            # kaiming_uniform with a=1: U(-b, b), b = sqrt(6 / ((1 + a^2) * fan_in)) = sqrt(3 / fan_in).
            bound = math.sqrt(3.0 / p[0].numel())
            assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound, name


def test_fpn_strides_empty_batch_and_bad_input():
    fpn = FPN(IN_CHANNELS, 12, top_blocks=LastLevelMaxPool())
    assert fpn.output_strides((8, 16, 32)) == (8, 16, 32, 64)
    assert FPN(IN_CHANNELS, 12).output_strides((8, 16, 32)) == (8, 16, 32)
    empty = [torch.zeros(0, c, h, w) for c, (h, w) in zip(IN_CHANNELS, SIZES)]
    assert [tuple(t.shape) for t in fpn(empty)] == [(0, 12, h, w) for h, w in SIZES + [(3, 3)]]
    with pytest.raises(ValueError, match="3 inputs"):
        fpn(empty[:2])
    with pytest.raises(ValueError, match="positive"):
        FPN([0, 8], 4)
