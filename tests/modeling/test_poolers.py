"""Pooler and LevelMapper: hand-derived levels and parity with torchvision's MultiScaleRoIAlign."""

import math
from collections import OrderedDict

import pytest
import torch
from torch.testing import assert_close
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops.poolers import LevelMapper as TVLevelMapper

from detbench.config.defaults import get_cfg
from detbench.extension import has_ops
from detbench.layers.roi_align import roi_align
from detbench.modeling.poolers import LevelMapper, Pooler, build_pooler, convert_to_roi_format
from detbench.structures.bounding_box import BoxList

needs_ops = pytest.mark.skipif(not has_ops(), reason="detbench._C is not built (pip install -e .)")

FPN_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
IMAGE_HW = (512, 640)


def _square(side: float, x0: float = 0.0) -> list[float]:
    return [x0, 0.0, x0 + side, side]


def test_level_mapper_hand_values():
    mapper = LevelMapper(k_min=2, k_max=5)
    boxes = torch.tensor(
        [
            _square(224),  # the canonical box: level 4
            _square(112),  # half the size: level 3 exactly (log2 = -1)
            _square(111),  # just below half: log2(111/224) = -1.013 -> floor(2.987) = 2
            _square(448),  # twice: level 5
            _square(1000),  # log2(1000/224) = 2.16 -> 6, clamped to k_max = 5
            _square(10),  # far below: clamped to k_min = 2
            [0.0, 0.0, 224.0, 56.0],  # sqrt(area) = 112: level 3 like the 112 square
        ]
    )
    # Indices are relative to k_min.
    assert mapper(boxes).tolist() == [2, 1, 0, 3, 3, 0, 1]
    assert mapper(boxes).dtype == torch.int64


def test_level_mapper_matches_torchvision_near_level_boundaries():
    g = torch.Generator().manual_seed(0)
    random_boxes = torch.rand(200, 4, generator=g) * 600
    random_boxes[:, 2:] += random_boxes[:, :2] + 1
    # Squares within a few 1e-7 of the 112 and 224 boundaries, where the placement of eps matters.
    sides = torch.cat([b * (1 + torch.arange(-20, 21) * 1e-7) for b in (112.0, 224.0)])
    near = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], dim=1)
    boxes = torch.cat([random_boxes, near])
    got = LevelMapper(2, 5)(boxes)
    expected = TVLevelMapper(2, 5)([boxes])
    assert torch.equal(got, expected)


def test_convert_to_roi_format_orders_images():
    a = BoxList(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), (10, 10))
    b = BoxList(torch.tensor([[5.0, 6.0, 7.0, 8.0], [0.0, 0.0, 2.0, 2.0]]), (10, 10))
    empty = BoxList(torch.zeros(0, 4), (10, 10))
    rois = convert_to_roi_format([a, empty, b])
    expected = torch.tensor([[0, 1, 2, 3, 4], [2, 5, 6, 7, 8], [2, 0, 0, 2, 2]], dtype=torch.float32)
    assert_close(rois, expected)


def _features(num_images: int, channels: int = 3, levels=FPN_SCALES, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = IMAGE_HW
    return [
        torch.rand(num_images, channels, int(h * s), int(w * s), generator=g, dtype=torch.float32)
        for s in levels
    ]


def _random_boxes(n: int, seed: int) -> torch.Tensor:
    """[n, 4] boxes inside the image, sqrt(area) log-uniform in [4, 500] so every level gets some."""
    g = torch.Generator().manual_seed(seed)
    h, w = IMAGE_HW
    side = torch.exp(torch.empty(n).uniform_(math.log(4), math.log(500), generator=g))
    aspect = torch.exp(torch.empty(n).uniform_(-0.2, 0.2, generator=g))
    wh = torch.stack([side * aspect, side / aspect], dim=1)
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) - wh).clamp(min=0)
    return torch.cat([xy, xy + wh], dim=1)


def _torchvision_pool(features, boxes, output_size, sampling_ratio):
    names = [str(i) for i in range(len(features))]
    pooler = MultiScaleRoIAlign(names, output_size, sampling_ratio)
    x = OrderedDict(zip(names, features))
    return pooler(x, boxes, [IMAGE_HW] * features[0].shape[0])


# detbench's CPU roi_align sums the bilinear taps of a bin in another order than torchvision's
# kernel, so pooled values agree to float32 rounding (about 2e-7 here), not bit for bit.
ROUNDING = dict(rtol=0, atol=1e-6)


@needs_ops
def test_pooler_matches_multiscale_roi_align():
    features = _features(2)
    boxes = [_random_boxes(40, seed=1), _random_boxes(25, seed=2)]
    levels = LevelMapper(2, 5)(torch.cat(boxes))
    assert set(levels.tolist()) == {0, 1, 2, 3}  # the test exercises every level
    pooler = Pooler((7, 7), FPN_SCALES, sampling_ratio=2)
    got = pooler(features, [BoxList(b, IMAGE_HW[::-1]) for b in boxes])
    expected = _torchvision_pool(features, boxes, 7, 2)
    assert got.shape == (65, 3, 7, 7)
    assert_close(got, expected, **ROUNDING)


@needs_ops
def test_pooler_routes_every_box_exactly():
    """Bit-exact against pooling each box alone from the level torchvision's mapper picks."""
    features = _features(2)
    boxes = [_random_boxes(40, seed=1), _random_boxes(25, seed=2)]
    got = Pooler((7, 7), FPN_SCALES, 2)(features, [BoxList(b, IMAGE_HW[::-1]) for b in boxes])
    levels = TVLevelMapper(2, 5)(boxes)
    image = torch.tensor([0] * 40 + [1] * 25, dtype=torch.float32)
    rows = []
    for box, img, level in zip(torch.cat(boxes), image, levels.tolist()):
        roi = torch.cat([img[None], box])[None]
        rows.append(roi_align(features[level], roi, (7, 7), FPN_SCALES[level], 2, False))
    assert_close(got, torch.cat(rows), rtol=0, atol=0)


@needs_ops
def test_pooler_gradient_matches_torchvision():
    features = [f.requires_grad_() for f in _features(1)]
    tv_features = [f.detach().clone().requires_grad_() for f in features]
    boxes = [_random_boxes(30, seed=3)]
    weight = torch.rand(30, 3, 5, 5, generator=torch.Generator().manual_seed(4))
    (Pooler((5, 5), FPN_SCALES, 2)(features, [BoxList(boxes[0], IMAGE_HW[::-1])]) * weight).sum().backward()
    (_torchvision_pool(tv_features, boxes, 5, 2) * weight).sum().backward()
    for got, expected in zip(features, tv_features):
        assert_close(got.grad, expected.grad)


@needs_ops
def test_pooler_ignores_extra_levels_and_single_level():
    features = _features(2)
    p6 = torch.rand(2, 3, 4, 5)
    boxes = [BoxList(_random_boxes(10, seed=5), IMAGE_HW[::-1]), BoxList(_random_boxes(3, seed=6), IMAGE_HW[::-1])]
    pooler = Pooler((4, 4), FPN_SCALES, 2)
    assert_close(pooler(features + [p6], boxes), pooler(features, boxes), rtol=0, atol=0)

    single = Pooler((6, 6), (1 / 16,), sampling_ratio=0)
    rois = convert_to_roi_format(boxes)
    got = single([features[2]], boxes)
    assert_close(got, roi_align(features[2], rois, (6, 6), 1 / 16, 0, False), rtol=0, atol=0)
    assert_close(got, tv_roi_align(features[2], rois, (6, 6), 1 / 16, 0, False), **ROUNDING)


@needs_ops
@pytest.mark.parametrize("scales", [FPN_SCALES, (1 / 16,)])
def test_pooler_without_boxes(scales):
    features = _features(2, levels=scales)
    empty = BoxList(torch.zeros(0, 4), IMAGE_HW[::-1])
    one = BoxList(torch.tensor([[10.0, 10.0, 50.0, 60.0]]), IMAGE_HW[::-1])
    pooler = Pooler((7, 7), scales, 2)
    assert pooler(features, [empty, empty]).shape == (0, 3, 7, 7)
    out = pooler(features, [empty, one])
    assert out.shape == (1, 3, 7, 7)
    # The box belongs to image 1: pooling image 1 alone gives the same values.
    assert_close(out, pooler([f[1:] for f in features], [one]), rtol=0, atol=0)


def test_pooler_rejects_bad_inputs():
    with pytest.raises(ValueError, match="power of two"):
        Pooler((7, 7), (0.3, 0.15), 2)
    with pytest.raises(ValueError, match="at least one scale"):
        Pooler((7, 7), (), 2)
    pooler = Pooler((7, 7), FPN_SCALES, 2)
    with pytest.raises(ValueError, match="4 scales but got 2"):
        pooler(_features(1)[:2], [BoxList(torch.zeros(0, 4), IMAGE_HW[::-1])])


def test_build_pooler_reads_head_keys():
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_BOX_HEAD.POOLER_SCALES = FPN_SCALES
    cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2
    cfg.MODEL.ROI_BOX_HEAD.POOLER_ALIGNED = True
    pooler = build_pooler(cfg, "ROI_BOX_HEAD")
    assert pooler.output_size == (7, 7) and pooler.sampling_ratio == 2 and pooler.aligned
    assert (pooler.map_levels.k_min, pooler.map_levels.k_max) == (2, 5)
    assert build_pooler(get_cfg(), "ROI_MASK_HEAD").map_levels is None  # one level: no mapping


@needs_ops
def test_roi_pool_pooler_matches_torchvision_per_level():
    """method="ROIPool": each box max-pooled from the level torchvision's mapper picks."""
    from torchvision.ops import roi_pool as tv_roi_pool

    features = _features(2)
    boxes = [_random_boxes(30, seed=7), _random_boxes(20, seed=8)]
    pooler = Pooler((7, 7), FPN_SCALES, 2, method="ROIPool")
    got = pooler(features, [BoxList(b, IMAGE_HW[::-1]) for b in boxes])
    levels = TVLevelMapper(2, 5)(boxes)
    image = torch.tensor([0] * 30 + [1] * 20, dtype=torch.float32)
    rows = [tv_roi_pool(features[level], torch.cat([img[None], box])[None], (7, 7), FPN_SCALES[level])
            for box, img, level in zip(torch.cat(boxes), image, levels.tolist())]
    assert_close(got, torch.cat(rows), rtol=0, atol=0)
    assert "method=ROIPool" in repr(pooler)


def test_build_pooler_reads_pooler_method():
    cfg = get_cfg()
    assert build_pooler(cfg, "ROI_BOX_HEAD").method == "ROIAlign"
    cfg.MODEL.ROI_MASK_HEAD.POOLER_METHOD = "ROIPool"
    assert build_pooler(cfg, "ROI_MASK_HEAD").method == "ROIPool"
    with pytest.raises(ValueError, match="ROIAlign"):
        Pooler((7, 7), FPN_SCALES, 2, method="RoIWarp")
