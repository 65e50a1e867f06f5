"""RPN loss: labels from matching and visibility, values on hand-made inputs, empty ground truth."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from detbench.config import get_cfg
from detbench.modeling.box_coder import BoxCoder
from detbench.modeling.rpn.loss import build_rpn_loss
from detbench.structures import BoxList

SIZE = (40, 20)  # (width, height)


def anchors_and_outputs(visible=(True, True, True, True), requires_grad=True):
    """One image, one level of 4 anchors (1 x 4 map, A = 1); head outputs with known values."""
    boxes = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [30, 0, 40, 10]])
    level = BoxList(boxes, SIZE)
    level.add_field("visibility", torch.tensor(visible))
    objectness = torch.tensor([2.0, -1.0, 0.5, 0.0]).view(1, 1, 1, 4).requires_grad_(requires_grad)
    deltas = torch.zeros(1, 4, 1, 4)
    deltas[0, :, 0, 0] = torch.tensor([0.1, -0.2, 0.0, 0.3])
    return [[level]], [objectness], [deltas.requires_grad_(requires_grad)]


def loss_fn(batch=256, beta=1.0 / 9):
    cfg = get_cfg()
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = batch
    cfg.MODEL.RPN.SMOOTH_L1_BETA = beta
    return build_rpn_loss(cfg, BoxCoder((1.0, 1.0, 1.0, 1.0)))


def gt(*boxes):
    return [BoxList(torch.tensor(boxes, dtype=torch.float32).view(-1, 4), SIZE)]


def test_hand_values():
    # GT = anchor 0 shifted right by 1: IoU 9/11 >= 0.7 -> positive; IoU with anchor 1 is
    # 1/19 < 0.3 -> negative; anchors 2, 3 do not overlap -> negative. All 4 are sampled.
    anchors, obj, deltas = anchors_and_outputs()
    loss_obj, loss_box = loss_fn()(anchors, obj, deltas, gt([1.0, 0, 11, 10]))
    expected_obj = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, -1.0, 0.5, 0.0]), torch.tensor([1.0, 0, 0, 0])
    )
    assert_close(loss_obj, expected_obj)
    # Target deltas of anchor 0: (0.1, 0, 0, 0); predicted (0.1, -0.2, 0, 0.3). Smooth L1 with
    # beta 1/9: |d| = 0.2 and 0.3 are above beta -> |d| - beta / 2 each; divided by 4 sampled.
    expected_box = ((0.2 - 0.5 / 9) + (0.3 - 0.5 / 9)) / 4
    assert loss_box.item() == pytest.approx(expected_box, rel=1e-5)


def test_low_quality_match_and_invisible_anchors():
    # IoU 1/3 with anchors 2 and 3 (between the thresholds), but they are the gt's best -> positive.
    anchors, obj, deltas = anchors_and_outputs(visible=(True, True, True, False))
    loss = loss_fn()
    labels, matches = loss.prepare_targets([anchors[0][0]], gt([25.0, 0, 35, 10]))
    # Anchor 3 ties with anchor 2 and is matched too, but it is invisible: ignored.
    assert labels[0].tolist() == [0.0, 0.0, 1.0, -1.0]
    assert matches[0].tolist() == [-1, -1, 0, 0]


def test_no_ground_truth_is_finite_and_connected():
    anchors, obj, deltas = anchors_and_outputs(visible=(True, True, False, True))
    loss_obj, loss_box = loss_fn()(anchors, obj, deltas, gt())
    expected_obj = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, -1.0, 0.0]), torch.zeros(3)
    )
    assert_close(loss_obj, expected_obj)
    assert loss_box.item() == 0.0 and loss_box.requires_grad
    (loss_obj + loss_box).backward()
    assert torch.isfinite(obj[0].grad).all() and obj[0].grad[0, 0, 0, 2] == 0  # the invisible anchor
    assert float(deltas[0].grad.abs().sum()) == 0.0


def test_nothing_sampled_is_zero_not_nan():
    anchors, obj, deltas = anchors_and_outputs(visible=(False, False, False, False))
    loss_obj, loss_box = loss_fn()(anchors, obj, deltas, gt([1.0, 0, 11, 10]))
    assert loss_obj.item() == 0.0 and loss_box.item() == 0.0
    (loss_obj + loss_box).backward()  # still part of the graph


def test_batch_size_limits_sampling():
    torch.manual_seed(0)
    anchors, obj, deltas = anchors_and_outputs()
    loss_obj, _ = loss_fn(batch=2)(anchors, obj, deltas, gt([1.0, 0, 11, 10]))
    # 1 positive (logit 2) and 1 of the 3 negatives: the mean of two BCE terms.
    candidates = [(math.log1p(math.exp(-2.0)) + math.log1p(math.exp(x))) / 2 for x in (-1.0, 0.5, 0.0)]
    assert min(abs(loss_obj.item() - c) for c in candidates) < 1e-6
