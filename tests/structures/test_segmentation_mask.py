"""SegmentationMask: polygons and bitmasks, geometry with hand-derived values, indexing,
rasterisation, and use as a BoxList field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from detbench.structures import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM, BoxList, cat_boxlist
from detbench.structures.segmentation_mask import SegmentationMask

# Image of width 8, height 6. Instance 0: the square [1, 4] x [1, 3] (pixels x 1..3, y 1..2);
# instance 1: two polygons, a 1 x 1 square at (6, 0) and a triangle; instance 2: nothing.
SQUARE = [1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0]
TINY = [6.0, 0.0, 7.0, 0.0, 7.0, 1.0, 6.0, 1.0]
TRIANGLE = [0.0, 4.0, 2.0, 4.0, 2.0, 6.0]
SIZE = (8, 6)


def make_poly() -> SegmentationMask:
    return SegmentationMask([[SQUARE], [TINY, TRIANGLE], []], SIZE)


def rect_mask(width: int, height: int, x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    """[height, width] uint8 with ones on pixel columns x1..x2-1 and rows y1..y2-1."""
    out = torch.zeros((height, width), dtype=torch.uint8)
    out[y1:y2, x1:x2] = 1
    return out


def flat(masks: SegmentationMask) -> list[list[list[float]]]:
    return [[p.tolist() for p in inst] for inst in masks.polygons]


# ---- construction ---------------------------------------------------------------------------


def test_polygons_are_kept_and_degenerate_ones_dropped():
    masks = SegmentationMask([[SQUARE, [0.0, 0.0, 1.0, 1.0]], [[2, 2, 3, 2, 3, 3]]], SIZE)
    # The 2-vertex polygon encloses nothing and is dropped; integer input becomes float64.
    assert flat(masks) == [[SQUARE], [[2.0, 2.0, 3.0, 2.0, 3.0, 3.0]]]
    assert len(masks) == 2 and masks.mode == "poly" and masks.size == SIZE


@pytest.mark.parametrize(
    "instances, size, mode, error",
    [
        ([[[0.0, 0.0, 1.0, 1.0, 2.0]]], SIZE, "poly", ValueError),  # odd number of coordinates
        (torch.zeros(1, 6, 8), SIZE, "bitmap", ValueError),  # unknown mode
        (torch.zeros(1, 8, 6), SIZE, "mask", ValueError),  # [N, W, H] instead of [N, H, W]
        ([], (8, -1), "poly", ValueError),
        ([{"size": [6, 8], "counts": "abc"}], SIZE, "poly", TypeError),  # crowd RLE, not polygons
        (torch.zeros(1, 6, 8), SIZE, "poly", TypeError),  # bitmasks without mode="mask"
    ],
)
def test_invalid_input_raises(instances, size, mode, error):
    with pytest.raises(error):
        SegmentationMask(instances, size, mode)


def test_bitmask_input_becomes_uint8_zero_one():
    masks = SegmentationMask(torch.tensor([[[0.0, 2.5], [-1.0, 0.0]]]), (2, 2), mode="mask")
    assert masks.get_mask_tensor().dtype == torch.uint8
    assert masks.get_mask_tensor().tolist() == [[[0, 1], [1, 0]]]
    from_list = SegmentationMask([torch.ones(2, 2)], (2, 2), mode="mask")
    assert from_list.get_mask_tensor().tolist() == [[[1, 1], [1, 1]]]


def test_empty():
    for masks in (SegmentationMask([], SIZE), SegmentationMask(torch.zeros(0, 6, 8), SIZE, "mask")):
        assert len(masks) == 0
        assert masks.get_mask_tensor().shape == (0, 6, 8)
        assert masks.resize((16, 12)).get_mask_tensor().shape == (0, 12, 16)
        assert len(masks.transpose(FLIP_LEFT_RIGHT).crop((0, 0, 4, 4))) == 0


# ---- rasterisation ----------------------------------------------------------------------------


def test_rasterise_axis_aligned_polygons():
    got = make_poly().get_mask_tensor()
    assert got.dtype == torch.uint8 and got.shape == (3, 6, 8)
    assert_close(got[0], rect_mask(8, 6, 1, 1, 4, 3))
    # The union of instance 1's polygons contains the whole tiny square; nothing in instance 2.
    assert got[1, 0, 6] == 1 and got[1, :, :6].sum() > 0 and got[1, 1:4].sum() == 0
    assert got[2].sum() == 0


def test_poly_to_mask_conversion():
    poly = make_poly()
    converted = poly.convert("mask")
    assert converted.mode == "mask" and converted.size == SIZE
    assert_close(converted.get_mask_tensor(), poly.get_mask_tensor())
    assert poly.convert("poly") is poly
    back = converted.convert("poly")
    assert back.mode == "poly" and len(back) == 3
    assert_close(back.get_mask_tensor(), poly.get_mask_tensor())


@pytest.mark.parametrize("seed", range(4))
def test_mask_to_poly_round_trip_is_exact(seed):
    # Random blobs with holes, one-pixel lines, masks touching every border, and an empty mask.
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(4, 13, 17, generator=g) > 0.55).to(torch.uint8)
    masks[1] = 0
    masks[2, 3:10, 2:12] = 1
    masks[2, 5:7, 5:8] = 0  # a hole
    masks[3] = 0
    masks[3, :, 0] = 1  # a one-pixel column on the left border
    as_poly = SegmentationMask(masks, (17, 13), "mask").convert("poly")
    assert as_poly.polygons[1] == []  # empty instance: no polygon
    assert_close(as_poly.get_mask_tensor(), masks)
    # Geometry then rasterisation agrees with the bitmask's own geometry.
    flipped = as_poly.transpose(0).get_mask_tensor()
    assert_close(flipped, masks.flip(-1))


def test_mask_to_polygons_by_hand():
    from detbench.structures.segmentation_mask import mask_to_polygons

    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 1:4] = 1  # a 3 x 2 block: one rectangle
    mask[3, 0] = 1
    assert mask_to_polygons(mask) == [[1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0], [0.0, 3.0, 1.0, 3.0, 1.0, 4.0, 0.0, 4.0]]


# ---- geometry: polygons (hand-derived coordinates) ------------------------------------------


def test_poly_resize_scales_coordinates():
    got = SegmentationMask([[SQUARE]], SIZE).resize((16, 3))  # x * 2, y * 0.5
    assert got.size == (16, 3)
    assert flat(got) == [[[2.0, 0.5, 8.0, 0.5, 8.0, 1.5, 2.0, 1.5]]]


def test_poly_flips():
    masks = SegmentationMask([[SQUARE]], SIZE)
    # x -> 8 - x, y unchanged; then y -> 6 - y.
    assert flat(masks.transpose(FLIP_LEFT_RIGHT)) == [[[7.0, 1.0, 4.0, 1.0, 4.0, 3.0, 7.0, 3.0]]]
    assert flat(masks.transpose(FLIP_TOP_BOTTOM)) == [[[1.0, 5.0, 4.0, 5.0, 4.0, 3.0, 1.0, 3.0]]]
    with pytest.raises(ValueError):
        masks.transpose(2)


def test_poly_crop_shifts_and_keeps_vertices_outside():
    got = SegmentationMask([[SQUARE]], SIZE).crop((2, 2, 7, 5))
    assert got.size == (5, 3)
    # Shifted by (-2, -2); the vertex at (1, 1) becomes (-1, -1) and stays.
    assert flat(got) == [[[-1.0, -1.0, 2.0, -1.0, 2.0, 1.0, -1.0, 1.0]]]
    # Rasterisation clips: pixels x 0..1, y 0 of the 5 x 3 crop.
    assert_close(got.get_mask_tensor()[0], rect_mask(5, 3, 0, 0, 2, 1))
    with pytest.raises(ValueError):
        got.crop((3, 0, 3, 2))


# ---- geometry: bitmasks, and agreement with the polygons --------------------------------------


def test_mask_resize_is_nearest():
    masks = SegmentationMask(rect_mask(4, 2, 1, 0, 2, 1)[None], (4, 2), "mask")
    got = masks.resize((8, 4)).get_mask_tensor()[0]
    assert_close(got, rect_mask(8, 4, 2, 0, 4, 2))  # every pixel becomes a 2 x 2 block


def test_mask_crop_rounds_and_pads_outside_the_image():
    masks = SegmentationMask(rect_mask(8, 6, 1, 1, 4, 3)[None], SIZE, "mask")
    got = masks.crop((2.4, 0.6, 9.5, 4.0))  # rounded to (2, 1, 10, 4): 8 x 3, 2 columns outside
    assert got.size == (8, 3)
    assert_close(got.get_mask_tensor()[0], rect_mask(8, 3, 0, 0, 2, 2))


@pytest.mark.parametrize(
    "op",
    [
        lambda m: m.transpose(FLIP_LEFT_RIGHT),
        lambda m: m.transpose(FLIP_TOP_BOTTOM),
        lambda m: m.crop((1, 2, 6, 6)),
        lambda m: m.crop((-2, -1, 5, 4)),
        lambda m: m.resize((16, 12)),
    ],
)
def test_poly_and_mask_geometry_agree_on_rectangles(op):
    # Integer-cornered rectangles rasterise exactly, so both representations must agree.
    rects = [(1, 1, 4, 3), (5, 0, 8, 6), (0, 4, 2, 6)]
    poly = SegmentationMask([[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in rects], SIZE)
    mask = SegmentationMask(torch.stack([rect_mask(8, 6, *r) for r in rects]), SIZE, "mask")
    got_poly, got_mask = op(poly), op(mask)
    assert got_poly.size == got_mask.size
    assert_close(got_poly.get_mask_tensor(), got_mask.get_mask_tensor())


# ---- indexing and containers ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["poly", "mask"])
@pytest.mark.parametrize(
    "item, expected",
    [
        (1, [1]),
        (-1, [2]),
        (slice(1, None), [1, 2]),
        (torch.tensor([True, False, True]), [0, 2]),
        (torch.tensor([2, 0, 0]), [2, 0, 0]),
        (torch.tensor([], dtype=torch.int64), []),
    ],
)
def test_getitem(mode, item, expected):
    masks = make_poly()
    full = masks.get_mask_tensor()
    if mode == "mask":
        masks = masks.convert("mask")
    got = masks[item]
    assert len(got) == len(expected) and got.mode == mode
    assert_close(got.get_mask_tensor(), full[expected])


def test_getitem_polygons_follow_their_instance():
    assert flat(make_poly()[torch.tensor([1, 0])]) == [[TINY, TRIANGLE], [SQUARE]]


@pytest.mark.parametrize("item", [3, -4, torch.tensor([True, False]), torch.tensor([0.0]), "a"])
def test_getitem_rejects_bad_indices(item):
    with pytest.raises((IndexError, TypeError)):
        make_poly()[item]


def test_cat_and_to():
    masks = make_poly()
    both = SegmentationMask.cat([masks[0], masks[1:]])
    assert flat(both) == flat(masks)
    moved = masks.to("cpu")
    assert flat(moved) == flat(masks)
    with pytest.raises(ValueError):
        SegmentationMask.cat([masks, masks.resize((4, 3))])


def test_as_boxlist_field():
    boxes = BoxList(torch.tensor([[1.0, 1.0, 4.0, 3.0], [0.0, 0.0, 7.0, 6.0], [0.0, 0.0, 1.0, 1.0]]), SIZE)
    boxes.add_field("masks", make_poly())
    flipped = boxes.transpose(FLIP_LEFT_RIGHT)
    assert flat(flipped.get_field("masks"))[0] == [[7.0, 1.0, 4.0, 1.0, 4.0, 3.0, 7.0, 3.0]]
    resized = boxes.resize((16, 12))
    assert resized.get_field("masks").size == (16, 12)
    picked = boxes[torch.tensor([True, False, False])]
    assert flat(picked.get_field("masks")) == [[SQUARE]]
    assert len(cat_boxlist([boxes, picked]).get_field("masks")) == 4
    cropped = boxes.crop((1, 1, 5, 4))
    assert_close(cropped.get_field("masks").get_mask_tensor()[0], rect_mask(4, 3, 0, 0, 3, 2))
