"""Keypoints / PersonKeypoints: geometry with hand-derived values, visibility rules, indexing."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from detbench.structures import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM, BoxList, cat_boxlist
from detbench.structures.keypoint import Keypoints, PersonKeypoints

SIZE = (10, 20)  # width 10, height 20


class ThreePoints(Keypoints):
    """A tiny keypoint set: a centre point and one left/right pair."""

    NAMES = ("centre", "left", "right")
    FLIP_MAP = {"left": "right"}


def three() -> ThreePoints:
    # Instance 0: all labelled; instance 1: "left" not labelled (v = 0) with junk coordinates.
    return ThreePoints(
        [[[5.0, 5.0, 2], [2.0, 4.0, 1], [8.0, 4.0, 2]], [[1.0, 1.0, 2], [3.0, 3.0, 0], [9.0, 19.0, 2]]], SIZE
    )


def test_person_keypoints_names_and_flip_indices():
    assert len(PersonKeypoints.NAMES) == 17 and PersonKeypoints.NAMES[0] == "nose"
    idx = PersonKeypoints.flip_indices()
    assert idx[0] == 0  # the nose has no mirror
    assert PersonKeypoints.NAMES[idx[PersonKeypoints.NAMES.index("left_wrist")]] == "right_wrist"
    assert sorted(idx) == list(range(17))
    with pytest.raises(ValueError):
        PersonKeypoints(torch.zeros(1, 16, 3), SIZE)


def test_construction():
    kp = three()
    assert kp.keypoints.shape == (2, 3, 3) and kp.keypoints.dtype == torch.float32 and len(kp) == 2
    assert PersonKeypoints([], SIZE).keypoints.shape == (0, 17, 3)
    with pytest.raises(ValueError):
        ThreePoints(torch.zeros(2, 3, 2), SIZE)


def test_resize_scales_and_keeps_visibility():
    got = three().resize((20, 10)).keypoints  # x * 2, y * 0.5
    assert_close(got[0], torch.tensor([[10.0, 2.5, 2], [4.0, 2.0, 1], [16.0, 2.0, 2]]))
    # The unlabelled keypoint is returned as (0, 0, 0).
    assert_close(got[1], torch.tensor([[2.0, 0.5, 2], [0.0, 0.0, 0], [18.0, 9.5, 2]]))


def test_horizontal_flip_mirrors_x_and_swaps_pairs():
    got = three().transpose(FLIP_LEFT_RIGHT).keypoints
    # x -> 10 - x, then "left" and "right" exchange rows.
    assert_close(got[0], torch.tensor([[5.0, 5.0, 2], [2.0, 4.0, 2], [8.0, 4.0, 1]]))
    assert_close(got[1], torch.tensor([[9.0, 1.0, 2], [1.0, 19.0, 2], [0.0, 0.0, 0]]))


def test_vertical_flip_mirrors_y_only():
    got = three().transpose(FLIP_TOP_BOTTOM).keypoints
    assert_close(got[0], torch.tensor([[5.0, 15.0, 2], [2.0, 16.0, 1], [8.0, 16.0, 2]]))
    assert_close(got[1, 1], torch.zeros(3))


def test_double_flip_is_identity_for_labelled_points():
    kp = PersonKeypoints(torch.rand(3, 17, 3) * 10 + 0.5, SIZE)  # all visible (v >= 0.5)
    assert_close(kp.transpose(FLIP_LEFT_RIGHT).transpose(FLIP_LEFT_RIGHT).keypoints, kp.keypoints)


def test_crop_shifts_and_hides_points_outside():
    got = three().crop((2, 4, 9, 19))  # 7 x 15 crop
    assert got.size == (7, 15)
    # Borders count as inside: (2, 4) -> (0, 0) and (9, 19) -> (7, 15) stay labelled.
    assert_close(got.keypoints[0], torch.tensor([[3.0, 1.0, 2], [0.0, 0.0, 1], [6.0, 0.0, 2]]))
    assert_close(got.keypoints[1], torch.tensor([[0.0, 0.0, 0], [0.0, 0.0, 0], [7.0, 15.0, 2]]))
    with pytest.raises(ValueError):
        three().crop((5, 5, 5, 9))


@pytest.mark.parametrize(
    "item, rows",
    [(0, [0]), (-1, [1]), (slice(0, 1), [0]), (torch.tensor([False, True]), [1]), (torch.tensor([1, 0]), [1, 0])],
)
def test_getitem(item, rows):
    kp = three()
    got = kp[item]
    assert type(got) is ThreePoints
    assert_close(got.keypoints, kp.keypoints[rows])


def test_cat_to_and_boxlist_field():
    boxes = BoxList(torch.tensor([[1.0, 1.0, 9.0, 9.0], [0.0, 0.0, 10.0, 20.0]]), SIZE)
    boxes.add_field("keypoints", three())
    flipped = boxes.transpose(FLIP_LEFT_RIGHT)
    assert_close(flipped.get_field("keypoints").keypoints, three().transpose(FLIP_LEFT_RIGHT).keypoints)
    picked = boxes[torch.tensor([1])]
    assert_close(picked.get_field("keypoints").keypoints, three().keypoints[1:])
    joined = cat_boxlist([boxes, picked]).get_field("keypoints")
    assert type(joined) is ThreePoints and len(joined) == 3
    assert_close(joined.to("cpu").keypoints[2], three().keypoints[1])
    with pytest.raises(ValueError):
        ThreePoints.cat([three(), three().resize((5, 5))])
