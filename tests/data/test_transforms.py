"""Transforms: sizes derived by hand, flips of boxes/masks/keypoints, tensor conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from detbench.config import get_cfg
from detbench.data.transforms import (
    Compose,
    Normalize,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
    build_transforms,
    get_size,
)
from detbench.structures import BoxList, PersonKeypoints, SegmentationMask


@pytest.mark.parametrize(
    "image_size, min_size, max_size, expected",
    [
        ((640, 480), 800, 1333, (1066, 800)),  # not capped: int(800 * 640 / 480) = int(1066.67)
        ((480, 640), 800, 1333, (800, 1066)),  # portrait: the same, swapped
        ((640, 480), 480, 1000, (640, 480)),  # already at size: unchanged
        ((500, 500), 300, None, (300, 300)),  # no cap
        ((1000, 250), 100, 300, (300, 75)),  # capped: 300 * 250 / 1000 = 75 exactly; 75 * 4 = 300
        # capped: round(1333 * 200 / 1000) = round(266.6) = 267, then int(267 * 5) = 1335: the
        # rounded-up short side pushes the long side 2 px past the cap (maskrcnn-benchmark's rule)
        ((1000, 200), 800, 1333, (1335, 267)),
        # capped: round(502 * 250 / 1000) = round(125.5) = 126 (halves go to even), int(126 * 4) = 504
        ((1000, 250), 200, 502, (504, 126)),
        # capped: round(501 * 250 / 1000) = round(125.25) = 125, int(125 * 4) = 500
        ((1000, 250), 200, 501, (500, 125)),
    ],
)
def test_get_size_by_hand(image_size, min_size, max_size, expected):
    assert get_size(image_size, min_size, max_size) == expected


def _target(size=(10, 6)) -> BoxList:
    """One box on a 10 x 6 image, with a polygon mask and person keypoints."""
    target = BoxList(torch.tensor([[1.0, 2.0, 4.0, 5.0]]), size)
    target.add_field("labels", torch.tensor([3]))
    target.add_field("masks", SegmentationMask([[[1, 2, 4, 2, 4, 5, 1, 5]]], size))
    kps = torch.zeros(1, 17, 3)
    kps[0, 1] = torch.tensor([2.0, 3.0, 2.0])  # left_eye
    kps[0, 2] = torch.tensor([3.0, 3.0, 1.0])  # right_eye
    target.add_field("keypoints", PersonKeypoints(kps, size))
    return target


def test_resize_scales_image_and_target():
    image = Image.new("RGB", (10, 6))
    out_image, out = Resize((12,), 100)(image, _target())
    # Short side 6 -> 12 (x2); long side int(12 * 10 / 6) = 20.
    assert out_image.size == (20, 12) and out.size == (20, 12)
    assert_close(out.bbox, torch.tensor([[2.0, 4.0, 8.0, 10.0]]))
    assert_close(out.get_field("keypoints").keypoints[0, 1], torch.tensor([4.0, 6.0, 2.0]))
    mask = out.get_field("masks").get_mask_tensor()
    assert mask.shape == (1, 12, 20) and mask[0, 4:10, 2:8].all() and mask.sum() == 36


def test_resize_draws_from_all_min_sizes():
    torch.manual_seed(0)
    resize = Resize((10, 20, 30), 1000)
    seen = {resize.draw_size((50, 50))[0] for _ in range(60)}
    assert seen == {10, 20, 30}


def test_flip_boxes_masks_keypoints_with_swap():
    pixels = np.zeros((6, 10, 3), dtype=np.uint8)
    pixels[0, 0] = 255  # top-left pixel
    image, out = RandomHorizontalFlip(1.0)(Image.fromarray(pixels), _target())
    assert np.asarray(image)[0, 9].tolist() == [255, 255, 255]  # now top-right
    # x -> 10 - x: box (1, 2, 4, 5) -> (6, 2, 9, 5).
    assert_close(out.bbox, torch.tensor([[6.0, 2.0, 9.0, 5.0]]))
    mask = out.get_field("masks").get_mask_tensor()[0]
    expected = torch.zeros(6, 10, dtype=torch.uint8)
    expected[2:5, 6:9] = 1
    assert torch.equal(mask, expected)
    kps = out.get_field("keypoints").keypoints[0]
    # The left eye (2, 3) mirrors to x = 8 and becomes the right eye; and vice versa.
    assert_close(kps[2], torch.tensor([8.0, 3.0, 2.0]))
    assert_close(kps[1], torch.tensor([7.0, 3.0, 1.0]))
    assert out.get_field("labels").tolist() == [3]


def test_flip_probability_zero_and_tensor_input():
    target = _target()
    image = torch.arange(6.0).view(1, 2, 3)
    same, t = RandomHorizontalFlip(0.0)(image, target)
    assert same is image and t is target
    flipped, _ = RandomHorizontalFlip(1.0)(image, None)
    assert_close(flipped, torch.tensor([[[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]]))


def test_to_tensor_and_normalize():
    pixels = np.array([[[255, 0, 51]]], dtype=np.uint8)  # one pixel, R=255, G=0, B=51
    tensor, _ = ToTensor()(Image.fromarray(pixels), None)
    assert tensor.shape == (3, 1, 1) and tensor.dtype == torch.float32
    assert_close(tensor[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    bgr, _ = Normalize([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], to_bgr255=True)(tensor)
    # BGR 255-range values (51, 0, 255), then (v - mean) / std.
    assert_close(bgr[:, 0, 0], torch.tensor([50.0, -1.0, 63.0]))
    rgb, _ = Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], to_bgr255=False)(tensor)
    assert_close(rgb[:, 0, 0], torch.tensor([1.0, -1.0, -0.6]))


def test_build_transforms_from_cfg():
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (12,)
    cfg.INPUT.MAX_SIZE_TRAIN = 100
    cfg.INPUT.MIN_SIZE_TEST = 3
    cfg.INPUT.MAX_SIZE_TEST = 100
    train, test = build_transforms(cfg, True), build_transforms(cfg, False)
    assert isinstance(train, Compose) and any(isinstance(t, RandomHorizontalFlip) for t in train.transforms)
    assert not any(isinstance(t, RandomHorizontalFlip) for t in test.transforms)
    image, target = test(Image.new("RGB", (10, 6), (255, 255, 255)), _target())
    assert image.shape == (3, 3, 5) and target.size == (5, 3)
    # White in BGR-255 minus the default means (102.98, 115.95, 122.77).
    assert_close(image[:, 0, 0], 255.0 - torch.tensor(cfg.INPUT.PIXEL_MEAN))
