"""Box-head feature extractors: every registry entry builds, shapes (K = 0 too), names, init, values."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from detbench.config.defaults import get_cfg
from detbench.extension import has_ops
from detbench.modeling.poolers import Pooler
from detbench.modeling.roi_heads.box_head.roi_box_feature_extractors import (
    ROI_BOX_FEATURE_EXTRACTORS,
    FPN2MLPFeatureExtractor,
    build_roi_box_feature_extractor,
)
from detbench.structures.bounding_box import BoxList

needs_ops = pytest.mark.skipif(not has_ops(), reason="detbench._C is not built (pip install -e .)")

IMAGE_WH = (64, 48)
FPN_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def _small_cfg(extractor: str):
    """A config with tiny widths; C4 uses a res5 head of 64 -> 128 channels."""
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR = extractor
    cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS = 2
    cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 4
    cfg.MODEL.GROUP_NORM.NUM_GROUPS = 4
    if extractor == "ResNet50Conv5ROIFeatureExtractor":
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 6
        cfg.MODEL.ROI_BOX_HEAD.POOLER_SCALES = (1 / 16,)
    else:
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 5
        cfg.MODEL.ROI_BOX_HEAD.POOLER_SCALES = FPN_SCALES
    return cfg


def _inputs(cfg, channels: int, num_boxes=(3, 2)):
    g = torch.Generator().manual_seed(0)
    w, h = IMAGE_WH
    scales = cfg.MODEL.ROI_BOX_HEAD.POOLER_SCALES
    features = [torch.rand(len(num_boxes), channels, int(h * s), int(w * s), generator=g) for s in scales]
    proposals = []
    for n in num_boxes:
        xy = torch.rand(n, 2, generator=g) * 30
        proposals.append(BoxList(torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 30], 1), IMAGE_WH))
    return features, proposals


EXPECTED_OUT = {
    # res5 of the tiny config: 16 * 8 = 128 channels, the 6 x 6 pooled map halved by its stride 2.
    "ResNet50Conv5ROIFeatureExtractor": (64, (128, 3, 3)),
    "FPN2MLPFeatureExtractor": (8, (32,)),
    "FPNXconv1fcFeatureExtractor": (8, (32,)),
}


def test_every_registered_extractor_is_tested():
    assert set(ROI_BOX_FEATURE_EXTRACTORS) == set(EXPECTED_OUT)


@needs_ops
@pytest.mark.parametrize("name", sorted(EXPECTED_OUT))
@pytest.mark.parametrize("num_boxes", [(3, 2), (0, 0)])
def test_extractor_shapes_and_gradients(name, num_boxes):
    cfg = _small_cfg(name)
    in_channels, out_shape = EXPECTED_OUT[name]
    extractor = build_roi_box_feature_extractor(cfg, in_channels)
    features, proposals = _inputs(cfg, in_channels, num_boxes)
    out = extractor(features, proposals)
    assert out.shape == (sum(num_boxes), *out_shape)
    assert extractor.out_channels == out_shape[0]
    out.sum().backward()
    # Every trainable parameter gets a gradient, zero when there are no boxes.
    for pname, p in extractor.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, pname
            if sum(num_boxes) == 0:
                assert not p.grad.any(), pname


def test_c4_extractor_checks_input_channels():
    with pytest.raises(ValueError, match="res5 head takes 64 channels"):
        build_roi_box_feature_extractor(_small_cfg("ResNet50Conv5ROIFeatureExtractor"), 32)


@pytest.mark.parametrize("use_gn", [False, True])
def test_2mlp_names_and_init(use_gn):
    cfg = _small_cfg("FPN2MLPFeatureExtractor")
    cfg.MODEL.ROI_BOX_HEAD.USE_GN = use_gn
    extractor = build_roi_box_feature_extractor(cfg, 8)
    names = {n for n, _ in extractor.named_parameters()}
    if use_gn:
        # maskrcnn-benchmark's make_fc: bias-free linear followed by GroupNorm.
        assert names == {f"fc{i}.{j}.{k}" for i in (6, 7) for j, k in ((0, "weight"), (1, "weight"), (1, "bias"))}
        assert isinstance(extractor.fc6[1], nn.GroupNorm) and extractor.fc6[1].num_groups == 4
        return
    assert names == {"fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"}
    fan_in = 8 * 5 * 5
    # kaiming_uniform(a=1): U(-b, b) with b = sqrt(6 / ((1 + a^2) fan_in)) = sqrt(3 / fan_in).
    bound = math.sqrt(3 / fan_in)
    assert extractor.fc6.weight.abs().max() <= bound
    assert extractor.fc6.weight.abs().max() > 0.9 * bound
    assert not extractor.fc6.bias.any() and not extractor.fc7.bias.any()


@pytest.mark.parametrize("use_gn", [False, True])
def test_xconv_names_init_and_dilation(use_gn):
    cfg = _small_cfg("FPNXconv1fcFeatureExtractor")
    cfg.MODEL.ROI_BOX_HEAD.USE_GN = use_gn
    cfg.MODEL.ROI_BOX_HEAD.DILATION = 2
    extractor = build_roi_box_feature_extractor(cfg, 8)
    step = 3 if use_gn else 2  # conv, [norm,] relu
    convs = [extractor.xconvs[i * step] for i in range(2)]
    assert all(isinstance(c, nn.Conv2d) and c.dilation == (2, 2) and c.padding == (2, 2) for c in convs)
    assert [c.in_channels for c in convs] == [8, 16]
    assert all((c.bias is None) == use_gn for c in convs)
    if use_gn:
        assert isinstance(extractor.xconvs[1], nn.GroupNorm)
    assert 0.005 < convs[1].weight.std() < 0.015  # normal(std 0.01) over 2304 weights
    # fc6 sees the full pooled map: the convolutions keep 5 x 5.
    assert extractor.fc6.in_features == 16 * 5 * 5 and extractor.fc6.out_features == 32


@needs_ops
def test_2mlp_values_match_manual_computation():
    pooler = Pooler((5, 5), FPN_SCALES, 2)
    extractor = FPN2MLPFeatureExtractor(pooler, in_channels=8, representation_size=32)
    cfg = _small_cfg("FPN2MLPFeatureExtractor")
    features, proposals = _inputs(cfg, 8)
    pooled = pooler(features, proposals).reshape(5, -1)
    hidden = torch.clamp(pooled @ extractor.fc6.weight.T + extractor.fc6.bias, min=0)
    expected = F.relu(hidden @ extractor.fc7.weight.T + extractor.fc7.bias)
    assert_close(extractor(features, proposals), expected)
