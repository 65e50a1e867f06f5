"""RPN post-processing rules on hand-made anchors and logits (zero deltas: proposals = anchors)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from detbench.modeling.box_coder import BoxCoder
from detbench.modeling.rpn.inference import RPNPostProcessor, concat_box_prediction_layers, keep_top_n_per_level
from detbench.structures import BoxList

SIZE = (100, 40)  # (width, height)
# Two levels of non-overlapping anchors, one anchor per location, H = 1.
LEVEL_BOXES = [
    torch.tensor([[10.0 * i, 0, 10 * i + 8, 8] for i in range(4)]),
    torch.tensor([[50.0 + 20 * i, 0, 66 + 20 * i, 16] for i in range(2)]),
]
# LOGITS[image][level]
LOGITS = [
    [[0.1, 0.4, 0.3, 0.2], [0.9, -1.0]],
    [[-2.0, -1.0, 5.0, 0.0], [3.0, 4.0]],
]


def make_inputs(level_boxes=LEVEL_BOXES, logits=LOGITS, size=SIZE):
    """anchors (per image, per level), objectness [N, 1, 1, W_l] and zero deltas [N, 4, 1, W_l] per level."""
    anchors = [[_anchors(b, size) for b in level_boxes] for _ in logits]
    objectness = [torch.tensor([image[lvl] for image in logits])[:, None, None, :] for lvl in range(len(level_boxes))]
    deltas = [torch.zeros(len(logits), 4, 1, len(b)) for b in level_boxes]
    return anchors, objectness, deltas


def _anchors(boxes: torch.Tensor, size) -> BoxList:
    out = BoxList(boxes, size)
    out.add_field("visibility", torch.ones(len(boxes), dtype=torch.bool))
    return out


def post(pre=-1, post_n=-1, fpn=None, per_batch=False, min_size=0.0, nms=0.7) -> RPNPostProcessor:
    return RPNPostProcessor(pre, post_n, nms, min_size, BoxCoder((1.0, 1.0, 1.0, 1.0)), fpn, per_batch)


def check(result: BoxList, expected: list[tuple[int, int]], image: int = 0) -> None:
    """``expected``: (level, index) of the anchors that must come out, in this order."""
    assert result.size == SIZE
    boxes = torch.stack([LEVEL_BOXES[lvl][i] for lvl, i in expected]) if expected else torch.zeros(0, 4)
    scores = torch.tensor([LOGITS[image][lvl][i] for lvl, i in expected]).sigmoid()
    assert_close(result.bbox, boxes, rtol=0, atol=0)
    assert_close(result.get_field("objectness"), scores)


def test_pre_nms_top_n_is_per_level():
    result = post(pre=3)(*make_inputs())
    check(result[0], [(1, 0), (0, 1), (0, 2), (0, 3), (1, 1)], image=0)  # level 0 loses its worst (0.1)
    check(result[1], [(0, 2), (1, 1), (1, 0), (0, 3), (0, 1)], image=1)


def test_post_nms_top_n_is_per_level():
    result = post(post_n=1)(*make_inputs())
    check(result[0], [(1, 0), (0, 1)], image=0)
    check(result[1], [(0, 2), (1, 1)], image=1)


def test_fpn_top_n_per_image():
    result = post(fpn=3)(*make_inputs())
    check(result[0], [(1, 0), (0, 1), (0, 2)], image=0)
    check(result[1], [(0, 2), (1, 1), (1, 0)], image=1)
    # Applied after the per-level limit.
    result = post(post_n=1, fpn=3)(*make_inputs())
    check(result[0], [(1, 0), (0, 1)], image=0)


def test_fpn_top_n_per_batch():
    result = post(fpn=3, per_batch=True)(*make_inputs())
    check(result[0], [], image=0)  # image 1's three best outscore everything in image 0
    check(result[1], [(0, 2), (1, 1), (1, 0)], image=1)
    result = post(fpn=6, per_batch=True)(*make_inputs())
    check(result[0], [(1, 0), (0, 1), (0, 2)], image=0)
    check(result[1], [(0, 2), (1, 1), (1, 0)], image=1)


def test_nms_within_a_level_only():
    level_boxes = [
        torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30]]),  # IoU(0, 1) = 10 / 11
        torch.tensor([[0.0, 0, 10, 10]]),  # the same box as level 0's first, on another level
    ]
    logits = [[[1.0, 2.0, 0.5], [0.0]]]
    (result,) = post()(*make_inputs(level_boxes, logits))
    assert_close(result.bbox, torch.stack([level_boxes[0][1], level_boxes[0][2], level_boxes[1][0]]), rtol=0, atol=0)
    (result,) = post(nms=0.95)(*make_inputs(level_boxes, logits))
    assert len(result) == 4


@pytest.mark.parametrize("min_size, expected_count", [(0.0, 3), (1e-3, 2), (5.0, 2), (5.5, 1)])
def test_clip_and_min_size(min_size, expected_count):
    # Clipped to [0, 0, 10, 10]; to [95, 0, 100, 30] (5 wide); to [100, 0, 100, 10] (empty).
    level_boxes = [torch.tensor([[-5.0, -5, 10, 10], [95, 0, 120, 30], [110, 0, 120, 10]])]
    (result,) = post(min_size=min_size)(*make_inputs(level_boxes, [[[3.0, 2.0, 1.0]]]))
    clipped = torch.tensor([[0.0, 0, 10, 10], [95, 0, 100, 30], [100, 0, 100, 10]])
    assert_close(result.bbox, clipped[:expected_count], rtol=0, atol=0)


def test_keep_top_n_per_level_keeps_order():
    keep = torch.tensor([5, 2, 7, 1, 0, 3])
    levels = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0])  # level of box i
    assert keep_top_n_per_level(keep, levels, 2, 2).tolist() == [5, 2, 7, 0]
    assert keep_top_n_per_level(keep[:0], levels, 2, 2).tolist() == []


def test_concat_box_prediction_layers_layout():
    # 2 anchors per location on a 1 x 2 map: channel a of objectness, channels 4a..4a+3 of deltas.
    obj = torch.arange(4.0).view(1, 2, 1, 2)  # obj[0, a, 0, x] = 2a + x
    reg = torch.arange(16.0).view(1, 8, 1, 2)
    flat_obj, flat_reg = concat_box_prediction_layers([obj], [reg])
    assert flat_obj.tolist() == [[0.0, 2.0, 1.0, 3.0]]  # location-major: (x0, a0), (x0, a1), (x1, a0), ...
    assert flat_reg[0, 1].tolist() == [8.0, 10.0, 12.0, 14.0]  # x = 0, anchor 1: channels 4..7


def test_outputs_are_detached():
    anchors, objectness, deltas = make_inputs()
    objectness = [o.requires_grad_() for o in objectness]
    result = post()(anchors, objectness, deltas)
    assert not result[0].get_field("objectness").requires_grad
