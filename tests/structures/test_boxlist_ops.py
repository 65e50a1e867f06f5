"""boxlist_ops: IoU against torchvision and hand values, NMS against torchvision, cat, filtering."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch.testing import assert_close

from detbench.extension import has_ops
from detbench.structures import BoxList, box_area, box_iou, boxlist_iou, boxlist_nms, cat_boxlist, remove_small_boxes


def random_boxes(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32, size: float = 50.0):
    """[n, 4] valid xyxy boxes (x2 > x1, y2 > y1) inside [0, size]^2, many overlapping."""
    corner = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size * 0.8
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size * 0.4 + 0.5
    return torch.cat([corner, corner + wh], dim=1).to(dtype)


# ---- IoU ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_box_iou_equals_torchvision(dtype):
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(13, g, dtype), random_boxes(7, g, dtype)
    b[0] = a[3]  # an exact match
    b[1] = torch.tensor([200.0, 200.0, 210.0, 210.0], dtype=dtype)  # disjoint from everything
    expected = torchvision.ops.box_iou(a, b)
    assert_close(box_iou(a, b), expected, rtol=0, atol=0)
    assert_close(box_area(a), torchvision.ops.box_area(a), rtol=0, atol=0)


def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [1.0, 0.0, 2.0, 1.0], [0.0, 0.0, 2.0, 2.0], [0.5, 0.5, 1.0, 1.0]])
    expected = torch.tensor(
        [
            [1 / 7, 1 / 4, 1.0, 0.25 / 4],  # a 1x1 corner overlap: 1 / (4 + 4 - 1)
            [0.0, 0.0, 1 / 4, 0.25],  # boxes sharing an edge do not overlap
        ]
    )
    assert_close(box_iou(a, b), expected)


def test_box_iou_degenerate_and_nan():
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    line = torch.tensor([[0.0, 0.0, 0.0, 5.0]])
    assert box_iou(point, point).item() == 0.0  # 0 / 0 is 0, not NaN (torchvision gives NaN)
    assert box_iou(point, line).item() == 0.0
    nan_box = torch.tensor([[0.0, 0.0, math.nan, 1.0]])
    assert math.isnan(box_iou(nan_box, torch.tensor([[0.0, 0.0, 1.0, 1.0]])).item())


def test_boxlist_iou_any_mode_and_sizes():
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(5, g), random_boxes(4, g)
    got = boxlist_iou(BoxList(a, (50, 60)).convert("xywh"), BoxList(b, (50, 60)))
    assert_close(got, torchvision.ops.box_iou(a, b))
    assert boxlist_iou(BoxList(a, (50, 60)), BoxList(torch.zeros(0, 4), (50, 60))).shape == (5, 0)
    assert boxlist_iou(BoxList(torch.zeros(0, 4), (50, 60)), BoxList(b, (50, 60))).shape == (0, 4)
    with pytest.raises(ValueError, match=r"same image size.*\(50, 60\) and \(60, 50\)"):
        boxlist_iou(BoxList(a, (50, 60)), BoxList(b, (60, 50)))


# ---- NMS (through detbench.layers.nms, which needs the compiled ops) ----------------------------------

needs_ops = pytest.mark.skipif(not has_ops(), reason="detbench._C is not built (pip install -e . --no-build-isolation)")


def scored_boxlist(n: int, seed: int, mode: str = "xyxy") -> BoxList:
    """n (a multiple of 6) boxes in clusters of jittered copies, so every threshold suppresses."""
    g = torch.Generator().manual_seed(seed)
    centres = random_boxes(n // 6, g).repeat(6, 1)
    jittered = centres + torch.randn(n, 4, generator=g).clamp(-2, 2)
    boxes = BoxList(torch.cat([jittered[:, :2], torch.maximum(jittered[:, 2:], jittered[:, :2] + 0.5)], 1), (50, 50))
    boxes = boxes.convert(mode)
    boxes.add_field("scores", torch.rand(n, generator=g))
    boxes.add_field("objectness", torch.rand(n, generator=g))
    boxes.add_field("labels", torch.arange(n))
    return boxes


@needs_ops
@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_boxlist_nms_equals_torchvision(mode, threshold):
    boxes = scored_boxlist(60, seed=2, mode=mode)
    expected = torchvision.ops.nms(boxes.convert("xyxy").bbox, boxes.get_field("scores"), threshold)
    assert 10 < len(expected) < 50  # the case really suppresses something
    out = boxlist_nms(boxes, threshold)
    assert out.mode == mode and out.size == (50, 50) and out.fields() == boxes.fields()
    assert_close(out.get_field("labels"), expected)  # labels are the original indices
    assert_close(out.bbox, boxes.bbox[expected])
    assert_close(out.get_field("scores"), boxes.get_field("scores")[expected])
    assert_close(out.get_field("objectness"), boxes.get_field("objectness")[expected])


@needs_ops
def test_boxlist_nms_max_proposals_and_score_field():
    boxes = scored_boxlist(60, seed=3)
    expected = torchvision.ops.nms(boxes.bbox, boxes.get_field("objectness"), 0.5)
    assert len(expected) > 4
    out = boxlist_nms(boxes, 0.5, max_proposals=4, score_field="objectness")
    assert_close(out.get_field("labels"), expected[:4])
    assert len(boxlist_nms(boxes, 0.5, max_proposals=1000, score_field="objectness")) == len(expected)
    assert boxlist_nms(boxes, 0.0) is boxes  # a threshold <= 0 disables suppression
    with pytest.raises(KeyError, match="no field 'logits'"):
        boxlist_nms(boxes, 0.5, score_field="logits")


@needs_ops
def test_boxlist_nms_empty():
    boxes = BoxList(torch.zeros(0, 4), (10, 10))
    boxes.add_field("scores", torch.zeros(0))
    out = boxlist_nms(boxes, 0.5)
    assert out.bbox.shape == (0, 4) and out.get_field("scores").shape == (0,)


# ---- filtering and concatenation ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
def test_remove_small_boxes(mode):
    raw = torch.tensor(
        [[0.0, 0.0, 3.0, 3.0], [0.0, 0.0, 2.9, 5.0], [1.0, 1.0, 9.0, 3.5], [2.0, 2.0, 5.0, 4.99], [0.0, 0.0, 3.0, 4.0]]
    )
    boxes = BoxList(raw, (10, 10)).convert(mode)
    boxes.add_field("labels", torch.tensor([0, 1, 2, 3, 4]))
    out = remove_small_boxes(boxes, 3.0)  # width and height >= 3 (3 itself is kept)
    assert out.mode == mode
    assert_close(out.get_field("labels"), torch.tensor([0, 4]))
    assert_close(out.convert("xyxy").bbox, raw[[0, 4]])
    assert len(remove_small_boxes(boxes[torch.zeros(0, dtype=torch.int64)], 3.0)) == 0


def test_remove_small_boxes_equals_torchvision():
    g = torch.Generator().manual_seed(4)
    raw = random_boxes(200, g)
    boxes = BoxList(raw, (50, 50))
    boxes.add_field("index", torch.arange(200))
    expected = torchvision.ops.remove_small_boxes(raw, 6.0)
    assert 0 < len(expected) < 200
    assert_close(remove_small_boxes(boxes, 6.0).get_field("index"), expected)


class ConcatField:
    def __init__(self, items: list) -> None:
        self.items = items

    @classmethod
    def cat(cls, fields: list) -> ConcatField:
        return cls([item for field in fields for item in field.items])


def two_boxlists(mode: str = "xyxy") -> tuple[BoxList, BoxList]:
    a = BoxList(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), (8, 6), mode)
    b = BoxList(torch.tensor([[1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]]), (8, 6), mode)
    for boxes, labels in ((a, [7]), (b, [8, 9])):
        boxes.add_field("labels", torch.tensor(labels))
        boxes.add_field("names", ConcatField([f"box{label}" for label in labels]))
    return a, b


def test_cat_boxlist():
    a, b = two_boxlists("xywh")
    out = cat_boxlist([a, b])
    assert out.size == (8, 6) and out.mode == "xywh" and len(out) == 3
    assert_close(out.bbox, torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]]))
    assert_close(out.get_field("labels"), torch.tensor([7, 8, 9]))
    assert out.get_field("names").items == ["box7", "box8", "box9"]
    assert len(cat_boxlist((a,))) == 1
    empty = BoxList(torch.zeros(0, 4), (8, 6), "xywh")
    empty.add_field("labels", torch.zeros(0, dtype=torch.int64))
    empty.add_field("names", ConcatField([]))
    assert_close(cat_boxlist([empty, b]).bbox, b.bbox)


def test_cat_boxlist_errors():
    a, b = two_boxlists()
    with pytest.raises(ValueError, match="non-empty list"):
        cat_boxlist([])
    with pytest.raises(ValueError, match="image sizes differ"):
        cat_boxlist([a, BoxList(b.bbox, (6, 8))])
    with pytest.raises(ValueError, match="modes differ"):
        cat_boxlist([a, b.convert("xywh")])
    with pytest.raises(ValueError, match="fields differ"):
        cat_boxlist([a, b.copy_with_fields("labels")])
    with pytest.raises(TypeError, match="BoxList"):
        cat_boxlist([a, b.bbox])
    b.extra_fields["names"] = object()
    with pytest.raises(TypeError, match="field 'names'"):
        cat_boxlist([a, b])
