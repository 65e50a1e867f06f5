"""draw_instances on synthetic images: where pixels must change and where they must not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detbench.structures import BoxList, PersonKeypoints, SegmentationMask
from detbench.utils.visualizer import PALETTE, PERSON_SKELETON, draw_instances, instance_masks

H, W = 80, 120
GREY = 128


def _image() -> np.ndarray:
    return np.full((H, W, 3), GREY, dtype=np.uint8)


def _prediction() -> BoxList:
    """Two scored detections with pasted probability masks: a 20 x 20 square and a low scorer."""
    result = BoxList(torch.tensor([[10.0, 20.0, 40.0, 50.0], [60.0, 10.0, 90.0, 30.0]]), (W, H))
    result.add_field("scores", torch.tensor([0.9, 0.2]))
    result.add_field("labels", torch.tensor([1, 2]))
    mask = torch.zeros(2, 1, H, W)
    mask[0, 0, 25:45, 15:35] = 0.8
    mask[1, 0, 12:28, 62:88] = 0.9
    result.add_field("mask", mask)
    return result


def test_mask_pixels_change_and_far_pixels_do_not():
    drawn = np.asarray(draw_instances(_image(), _prediction(), ["bg", "cat", "dog"], score_threshold=0.5))
    assert drawn.shape == (H, W, 3) and drawn.dtype == np.uint8
    # Inside the mask (away from outline, box and label) the fill is blended with PALETTE[0].
    inside = drawn[30:40, 20:30].reshape(-1, 3).astype(int)
    expected = np.round(0.55 * GREY + 0.45 * np.array(PALETTE[0])).astype(int)
    assert np.abs(inside - expected).max() <= 1
    # Far from every instance: untouched. The second detection (score 0.2) is not drawn at all.
    assert (drawn[60:, 60:] == GREY).all()
    assert (drawn[12:28, 62:88] == GREY).all()
    # The box outline of the first detection has its colour.
    assert tuple(drawn[35, 10]) == PALETTE[0]


def test_masks_are_cut_at_mask_threshold():
    low = draw_instances(_image(), _prediction(), mask_threshold=0.85)  # 0.8 < 0.85: no fill
    assert (np.asarray(low)[30:40, 20:30] == GREY).all()


def test_labels_at_the_border_stay_inside():
    boxes = torch.tensor([[0.0, 0.0, 5.0, 5.0], [W - 3.0, H - 3.0, W + 10.0, H + 10.0], [-20.0, 30.0, 2.0, 40.0]])
    result = BoxList(boxes, (W, H))
    result.add_field("labels", torch.tensor([1, 1, 1]))
    result.add_field("scores", torch.ones(3))
    long_name = ["bg", "a very long class name that is wider than the image itself"]
    drawn = draw_instances(_image(), result, long_name)
    assert drawn.size == (W, H)
    # The first label sits inside the image, below y = 0: its background colour is at the corner.
    assert tuple(np.asarray(drawn)[1, 1]) in {PALETTE[0], PALETTE[1], PALETTE[2]}


def test_ground_truth_polygons_and_keypoints():
    target = BoxList(torch.tensor([[20.0, 10.0, 80.0, 70.0]]), (W, H))
    target.add_field("labels", torch.tensor([1]))
    target.add_field("masks", SegmentationMask([[[20, 10, 80, 10, 80, 70, 20, 70]]], (W, H)))
    kps = torch.zeros(1, 17, 3)
    names = PersonKeypoints.NAMES
    kps[0, names.index("left_shoulder")] = torch.tensor([30.0, 30.0, 2.0])
    kps[0, names.index("left_elbow")] = torch.tensor([50.0, 50.0, 1.0])
    kps[0, names.index("nose")] = torch.tensor([100.0, 60.0, 0.0])  # not labelled: not drawn
    target.add_field("keypoints", PersonKeypoints(kps, (W, H)))
    drawn = np.asarray(draw_instances(_image(), target, ["bg", "person"]))
    fill = tuple(drawn[25, 60])  # inside the polygon, away from box, label and keypoints
    assert fill not in {PALETTE[0], (GREY, GREY, GREY)}
    assert tuple(drawn[30, 30]) == PALETTE[0]  # the shoulder's dot (row = y, column = x)
    assert ("left_shoulder", "left_elbow") in PERSON_SKELETON
    assert tuple(drawn[40, 40]) == PALETTE[0]  # the limb between shoulder and elbow, midway
    assert (drawn[55:65, 95:105] == GREY).all()  # outside the instance, where the hidden nose is
    assert (drawn[75:, :15] == GREY).all()


def test_box_relative_masks_are_pasted_and_sizes_follow_the_image():
    # A network-size prediction (twice the image) with [N, 1, M, M] masks; drawn on the image.
    result = BoxList(torch.tensor([[40.0, 40.0, 120.0, 120.0]]), (2 * W, 2 * H))
    result.add_field("scores", torch.tensor([0.99]))
    result.add_field("labels", torch.tensor([3]))
    result.add_field("mask", torch.ones(1, 1, 28, 28))
    masks = instance_masks(result.resize((W, H)))
    assert masks.shape == (1, H, W)
    assert masks[0, 25:35, 25:35].all() and not masks[0, 70:, 100:].any()
    drawn = np.asarray(draw_instances(Image.fromarray(_image()), result))
    assert (drawn[70:, 100:] == GREY).all() and not (drawn[28:32, 28:32] == GREY).all()


def test_empty_boxlist_and_bad_image():
    empty = BoxList(torch.zeros(0, 4), (W, H))
    empty.add_field("scores", torch.zeros(0))
    empty.add_field("labels", torch.zeros(0, dtype=torch.int64))
    empty.add_field("mask", torch.zeros(0, 1, 28, 28))
    assert (np.asarray(draw_instances(_image(), empty)) == GREY).all()
    with pytest.raises(ValueError, match="H x W x 3"):
        draw_instances(np.zeros((H, W), dtype=np.uint8), empty)


def test_small_images_are_enlarged_by_a_whole_factor():
    image = np.zeros((32, 48, 3), dtype=np.uint8)
    image[::2] = 200  # stripes: nearest-neighbour enlargement keeps them sharp
    result = BoxList(torch.tensor([[4.0, 4.0, 20.0, 20.0]]), (48, 32))
    result.add_field("labels", torch.tensor([1]))
    masks = SegmentationMask(torch.zeros(1, 32, 48, dtype=torch.uint8), (48, 32), "mask")
    result.add_field("masks", masks)
    drawn = np.asarray(draw_instances(image, result, ["bg", "thing"], min_size=128))
    assert drawn.shape == (128, 192, 3)  # factor ceil(128 / 32) = 4
    # Far from the instance every source pixel became a 4 x 4 block of itself.
    assert (drawn[96:, 120:] == image.repeat(4, axis=0).repeat(4, axis=1)[96:, 120:]).all()
    assert tuple(drawn[40, 16]) == PALETTE[0]  # the box (x = 4 -> 16) at 4 times its coordinates
    assert np.asarray(draw_instances(image, result, min_size=0)).shape == (32, 48, 3)


def test_labels_do_not_cover_the_objects_they_name():
    from detbench.utils.visualizer import place_label

    # Room above: the label sits on top of the box, left-aligned.
    assert place_label((20, 30, 60, 70), (30, 10), (100, 100)) == (20, 20, 50, 30)
    # A box touching the top: below it instead of over it.
    assert place_label((20, 0, 60, 40), (30, 10), (100, 100)) == (20, 40, 50, 50)
    # The whole height taken: beside the box.
    assert place_label((0, 0, 40, 100), (30, 10), (100, 100)) == (40, 0, 70, 10)
    # Two boxes side by side: the second label avoids the first box and the first label.
    first = place_label((10, 20, 40, 50), (25, 10), (100, 100))
    second = place_label((45, 20, 80, 50), (40, 10), (100, 100), [(10, 20, 40, 50), first])
    assert first == (10, 10, 35, 20) and second[1] == 10 and second[0] >= 35
