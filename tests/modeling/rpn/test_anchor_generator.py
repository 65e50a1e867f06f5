"""AnchorGenerator: hand values, torchvision's anchors, order, visibility, caching."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TVImageList

from detbench.config import get_cfg
from detbench.modeling.rpn import AnchorGenerator, build_anchor_generator, generate_cell_anchors
from detbench.structures import ImageList

RATIOS = (0.5, 1.0, 2.0)


def test_cell_anchors_hand_values():
    # size 32: ratio 0.5 (h / w) -> w = 32 * sqrt(2) = 45.25, h = 22.63 -> half sizes 22.6, 11.3
    # rounded to 23, 11; ratio 1 -> 16, 16; ratio 2 -> 11, 23.
    expected = torch.tensor([[-23.0, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
    assert_close(generate_cell_anchors((32,), RATIOS), expected, rtol=0, atol=0)
    # Several sizes: ratio-major rows (all sizes of ratio 0.5 first).
    two = generate_cell_anchors((16, 32), RATIOS)
    assert_close(two[1], expected[0], rtol=0, atol=0)
    assert_close(two[3], expected[1], rtol=0, atol=0)


def test_grid_order_is_location_major():
    gen = AnchorGenerator((32,), RATIOS, (16,), straddle_thresh=-1)
    anchors = gen.grid_anchors(0, (2, 3), torch.device("cpu"), torch.float32)  # H = 2, W = 3
    assert anchors.shape == (2 * 3 * 3, 4)
    cell = generate_cell_anchors((32,), RATIOS)
    assert_close(anchors[:3], cell, rtol=0, atol=0)  # location (y=0, x=0)
    assert_close(anchors[3:6], cell + torch.tensor([16.0, 0, 16, 0]), rtol=0, atol=0)  # (0, 1)
    assert_close(anchors[9:12], cell + torch.tensor([0.0, 16, 0, 16]), rtol=0, atol=0)  # (1, 0)


def feature_maps(batch: int, height: int, width: int, strides, dtype=torch.float32):
    return [torch.zeros(batch, 2, height // s, width // s, dtype=dtype) for s in strides]


@pytest.mark.parametrize("fpn", [True, False])
def test_equals_torchvision(fpn):
    sizes = (32, 64, 128, 256, 512)
    strides = (4, 8, 16, 32, 64) if fpn else (16,)
    images = torch.zeros(2, 3, 128, 192)
    feats = feature_maps(2, 128, 192, strides)
    tv_sizes = tuple((s,) for s in sizes) if fpn else (sizes,)
    tv = TVAnchorGenerator(tv_sizes, (RATIOS,) * len(tv_sizes))(TVImageList(images, [(128, 192), (100, 150)]), feats)
    ours = AnchorGenerator(sizes, RATIOS, strides, straddle_thresh=-1)(
        ImageList(images, [(128, 192), (100, 150)]), feats
    )
    assert len(ours) == 2 and len(ours[0]) == len(strides)
    for per_image, expected in zip(ours, tv):
        assert_close(torch.cat([b.bbox for b in per_image]), expected, rtol=0, atol=0)
    assert ours[1][0].size == (150, 100)  # BoxList size is (width, height)
    assert bool(ours[1][0].get_field("visibility").all())


def test_visibility_with_straddle_thresh():
    gen = AnchorGenerator((16,), (1.0,), (8,), straddle_thresh=0)
    images = ImageList(torch.zeros(1, 3, 32, 32), [(24, 32)])  # height 24, width 32
    (level,) = gen(images, [torch.zeros(1, 1, 4, 4)])[0]
    # Anchors are [-8, -8, 8, 8] + 8 * (x, y), x, y in 0..3: inside iff x in {1, 2, 3}
    # (x2 = 8x + 8 <= 32) and y in {1, 2} (y2 = 8y + 8 <= 24; touching the border counts).
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:4] = True
    assert torch.equal(level.get_field("visibility"), expected.flatten())
    loose = AnchorGenerator((16,), (1.0,), (8,), straddle_thresh=8)
    (level,) = loose(images, [torch.zeros(1, 1, 4, 4)])[0]
    assert bool(level.get_field("visibility").all())


def test_strides_from_image_match_torchvision_when_p6_is_rounded_up():
    """800 x 1216: P6 is 13 x 19 (800 / 64 rounded up), where torchvision's stride is 800 // 13 = 61
    rows apart and 1216 // 19 = 64 columns; the fixed strides put the rows 64 apart."""
    sizes, strides = (32, 64, 128, 256, 512), (4, 8, 16, 32, 64)
    images = torch.zeros(1, 3, 800, 1216)
    feats = [torch.zeros(1, 1, -(-800 // s), -(-1216 // s)) for s in strides]
    assert feats[-1].shape[-2:] == (13, 19)
    expected = TVAnchorGenerator(tuple((s,) for s in sizes), (RATIOS,) * 5)(TVImageList(images, [(800, 1216)]), feats)[0]
    derived = AnchorGenerator(sizes, RATIOS, strides, straddle_thresh=-1, strides_from_image=True)(
        ImageList(images, [(800, 1216)]), feats)[0]
    assert_close(torch.cat([b.bbox for b in derived]), expected, rtol=0, atol=0)
    fixed = AnchorGenerator(sizes, RATIOS, strides, straddle_thresh=-1)(ImageList(images, [(800, 1216)]), feats)[0]
    assert_close(torch.cat([b.bbox for b in fixed[:4]]), torch.cat([b.bbox for b in derived[:4]]), rtol=0, atol=0)
    last_row = fixed[4].bbox[-1] - derived[4].bbox[-1]  # row 12: 12 * (64 - 61) = 36 px lower
    assert_close(last_row, torch.tensor([0.0, 36.0, 0.0, 36.0]), rtol=0, atol=0)
    cfg = get_cfg()
    cfg.MODEL.RPN.STRIDES_FROM_IMAGE = True
    assert build_anchor_generator(cfg).strides_from_image


def test_cache_reuses_and_is_bounded():
    gen = AnchorGenerator((32,), RATIOS, (16,), cache_size=2)
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    first = gen(images, [torch.zeros(1, 2, 4, 4)])[0][0].bbox
    assert gen(images, [torch.zeros(1, 2, 4, 4)])[0][0].bbox is first
    double = gen(images, [torch.zeros(1, 2, 4, 4, dtype=torch.float64)])[0][0].bbox
    assert double.dtype == torch.float64 and double is not first
    gen(images, [torch.zeros(1, 2, 3, 4)])
    assert len(gen._cache) == 2
    assert gen(images, [torch.zeros(1, 2, 4, 4)])[0][0].bbox is not first  # evicted, rebuilt


def test_builder_and_errors():
    cfg = get_cfg()
    gen = build_anchor_generator(cfg)  # C4 defaults: 5 sizes x 3 ratios at stride 16
    assert gen.num_anchors_per_location() == [15] and gen.strides == (16,)
    cfg.MODEL.RPN.USE_FPN = True
    cfg.MODEL.RPN.ANCHOR_STRIDE = (4, 8, 16, 32, 64)
    assert build_anchor_generator(cfg).num_anchors_per_location() == [3] * 5
    cfg.MODEL.RPN.ANCHOR_STRIDE = (4, 8)
    with pytest.raises(ValueError, match="one anchor size per stride"):
        build_anchor_generator(cfg)
    with pytest.raises(ValueError, match="3 levels but got 1"):
        gen = AnchorGenerator((32, 64, 128), RATIOS, (4, 8, 16))
        gen(ImageList(torch.zeros(1, 3, 8, 8), [(8, 8)]), [torch.zeros(1, 1, 2, 2)])
