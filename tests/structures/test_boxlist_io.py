"""BoxList <-> plain dicts that torch.load(weights_only=True) reads back."""

from __future__ import annotations

import io

import pytest
import torch

from detbench.structures import BoxList, PersonKeypoints, SegmentationMask
from detbench.structures.boxlist_io import boxlist_from_dict, boxlist_to_dict


def _prediction() -> BoxList:
    boxes = BoxList(torch.tensor([[1.0, 2.0, 5.0, 7.0], [0.0, 0.0, 3.0, 3.0]]), (10, 8), mode="xyxy")
    boxes.add_field("scores", torch.tensor([0.9, 0.2]))
    boxes.add_field("labels", torch.tensor([3, 1]))
    boxes.add_field("mask", torch.rand(2, 1, 28, 28))
    kps = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)
    boxes.add_field("keypoints", PersonKeypoints(kps, (10, 8)))
    return boxes


def test_round_trip_through_a_weights_only_load():
    original = _prediction()
    buffer = io.BytesIO()
    torch.save({7: boxlist_to_dict(original)}, buffer)
    buffer.seek(0)
    restored = boxlist_from_dict(torch.load(buffer, weights_only=True)[7])
    assert restored.size == original.size and restored.mode == original.mode
    assert restored.fields() == original.fields()
    torch.testing.assert_close(restored.bbox, original.bbox, rtol=0, atol=0)
    for name in ("scores", "labels", "mask"):
        torch.testing.assert_close(restored.get_field(name), original.get_field(name), rtol=0, atol=0)
    keypoints = restored.get_field("keypoints")
    assert type(keypoints) is PersonKeypoints and keypoints.size == (10, 8)
    torch.testing.assert_close(keypoints.keypoints, original.get_field("keypoints").keypoints, rtol=0, atol=0)


def test_empty_boxlist_round_trips():
    empty = BoxList(torch.zeros(0, 4), (5, 6), mode="xywh")
    restored = boxlist_from_dict(boxlist_to_dict(empty))
    assert len(restored) == 0 and restored.mode == "xywh" and restored.size == (5, 6)


def test_fields_that_would_need_a_pickle_are_refused_by_name():
    boxes = BoxList(torch.zeros(1, 4), (4, 4))
    boxes.add_field("masks", SegmentationMask([[[0, 0, 2, 0, 2, 2]]], (4, 4), mode="poly"))
    with pytest.raises(TypeError, match="'masks' is a SegmentationMask"):
        boxlist_to_dict(boxes)


@pytest.mark.parametrize("broken, message", [
    ({"bbox": torch.zeros(0, 4)}, "needs bbox, size, mode, fields"),
    ({"bbox": torch.zeros(0, 4), "size": [1, 1], "mode": "xyxy", "fields": {"k": {"type": "Evil"}}}, "unknown keypoint type"),
    ({"bbox": torch.zeros(0, 4), "size": [1, 1], "mode": "xyxy", "fields": {"s": [1, 2]}}, "expected a tensor"),
])
def test_malformed_entries_say_what_is_wrong(broken, message):
    with pytest.raises(ValueError, match=message):
        boxlist_from_dict(broken)
