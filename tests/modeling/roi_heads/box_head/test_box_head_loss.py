"""FastRCNNLossComputation: hand-made matching and targets, sampling counts, empty images, and
parity with torchvision's RoIHeads.select_training_samples / fastrcnn_loss."""

import math

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from detbench.config.defaults import get_cfg
from detbench.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from detbench.modeling.box_coder import BoxCoder
from detbench.modeling.matcher import Matcher
from detbench.modeling.roi_heads.box_head.loss import FastRCNNLossComputation, make_roi_box_loss_evaluator
from detbench.structures.bounding_box import BoxList

SIZE = (100, 100)
BETA = 1 / 9


def _target(boxes, labels, size=SIZE):
    t = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    t.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    return t


GT = _target([[10, 10, 50, 50], [60, 60, 90, 90]], [3, 5])
PROPOSALS = BoxList(
    torch.tensor(
        [
            [10, 10, 50, 50],  # IoU 1 with gt 0
            [62, 60, 92, 90],  # IoU 840 / 960 = 0.875 with gt 1
            [10, 10, 30, 50],  # IoU 800 / 1600 = 0.5 with gt 0: foreground at a 0.5 threshold
            [0, 0, 5, 5],  # overlaps nothing
            [10, 10, 29, 50],  # IoU 760 / 1600 = 0.475 with gt 0
        ],
        dtype=torch.float32,
    ),
    SIZE,
)


def _loss(fg=0.5, bg=0.5, batch=512, fraction=0.25, add_gt=False, agnostic=False):
    return FastRCNNLossComputation(
        Matcher(fg, bg, allow_low_quality_matches=False),
        BalancedPositiveNegativeSampler(batch, fraction),
        BoxCoder((10.0, 10.0, 5.0, 5.0)),
        add_gt_proposals=add_gt,
        cls_agnostic_bbox_reg=agnostic,
    )


def test_subsample_hand_made():
    (out,) = _loss().subsample([PROPOSALS], [GT])
    assert_close(out.bbox, PROPOSALS.bbox)  # everything sampled, in index order
    assert out.get_field("labels").tolist() == [3, 5, 3, 0, 0]
    assert out.get_field("matched_idxs").tolist() == [0, 1, 0, 0, 0]
    targets = out.get_field("regression_targets")
    # Proposal 0 is the ground truth: zero deltas. Proposal 1: dx = 10 (75 - 77) / 30.
    # Proposal 2 (w 20, cx 20) to gt 0 (w 40, cx 30): dx = 10 * 10 / 20, dw = 5 log 2.
    expected = torch.tensor(
        [[0, 0, 0, 0], [-2 / 3, 0, 0, 0], [5, 0, 5 * math.log(2), 0]], dtype=torch.float32
    )
    assert_close(targets[:3], expected)
    assert torch.isfinite(targets).all()


def test_subsample_adds_ground_truth_last():
    (out,) = _loss(add_gt=True).subsample([PROPOSALS], [GT])
    assert len(out) == 7
    assert_close(out.bbox[5:], GT.bbox)
    assert out.get_field("labels")[5:].tolist() == [3, 5]
    assert out.get_field("matched_idxs")[5:].tolist() == [0, 1]
    assert not out.get_field("regression_targets")[5:].any()
    assert set(out.fields()) == {"labels", "matched_idxs", "regression_targets"}


def test_between_thresholds_is_never_sampled():
    (out,) = _loss(fg=0.7, bg=0.3).subsample([PROPOSALS], [GT])
    # Proposals 2 and 4 (IoU 0.5, 0.475) are ignored; 0, 1 foreground, 3 background.
    assert_close(out.bbox, PROPOSALS.bbox[[0, 1, 3]])
    assert out.get_field("labels").tolist() == [3, 5, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampling_counts(seed):
    torch.manual_seed(seed)
    background = torch.tensor([[70.0, 0, 75, 5]]).repeat(10, 1) + torch.arange(10.0)[:, None]
    proposals = BoxList(torch.cat([PROPOSALS.bbox, background]), SIZE)
    # 5 foreground (3 proposals + 2 gt), 12 background: batch 4 at 25 % = 1 positive, 3 negatives.
    (out,) = _loss(batch=4, fraction=0.25, add_gt=True).subsample([proposals], [GT])
    labels = out.get_field("labels")
    assert (labels > 0).sum() == 1 and (labels == 0).sum() == 3


def test_image_without_ground_truth():
    empty = _target([], [])
    out_empty, out_gt = _loss(add_gt=True).subsample([PROPOSALS, PROPOSALS], [empty, GT])
    assert len(out_empty) == 5  # nothing added, all background
    assert not out_empty.get_field("labels").any()
    assert not out_empty.get_field("matched_idxs").any()
    # Background targets are unused; they are zero rather than -inf here.
    assert not out_empty.get_field("regression_targets").any()
    assert len(out_gt) == 7


def test_losses_hand_values():
    loss = _loss()
    sampled = loss.subsample([PROPOSALS], [GT])
    class_logits = torch.zeros(5, 6, requires_grad=True)
    box_regression = torch.zeros(5, 24, requires_grad=True)
    loss_cls, loss_box = loss(class_logits, box_regression, sampled)
    assert_close(loss_cls, torch.tensor(math.log(6)))  # uniform logits over 6 classes
    # Non-zero deltas: -2/3, 5 and 5 log 2, each beyond beta: |d| - beta / 2; over 5 sampled.
    deltas = torch.tensor([2 / 3, 5, 5 * math.log(2)])
    assert_close(loss_box, (deltas - BETA / 2).sum() / 5)
    (loss_cls + loss_box).backward()
    # Only the ground-truth class columns of the positives get a box gradient.
    touched = box_regression.grad.reshape(5, 6, 4).abs().sum(dim=2) > 0
    assert touched.nonzero().tolist() == [[1, 5], [2, 3]]


def test_class_agnostic_uses_object_columns():
    loss = _loss(agnostic=True)
    sampled = loss.subsample([PROPOSALS], [GT])
    box_regression = torch.zeros(5, 8)
    box_regression[:, 4:] = sampled[0].get_field("regression_targets")
    # Deltas equal to the targets in the object columns: no box loss; any other columns are ignored.
    box_regression[:, :4] = 7.0
    _, loss_box = loss(torch.zeros(5, 6), box_regression, sampled)
    assert loss_box == 0


def test_no_sampled_proposals_gives_zero_losses():
    loss = _loss(add_gt=True)
    sampled = loss.subsample([BoxList(torch.zeros(0, 4), SIZE)], [_target([], [])])
    assert len(sampled[0]) == 0
    class_logits = torch.zeros(0, 6, requires_grad=True)
    box_regression = torch.zeros(0, 24, requires_grad=True)
    loss_cls, loss_box = loss(class_logits, box_regression, sampled)
    assert loss_cls == 0 and loss_box == 0
    (loss_cls + loss_box).backward()
    assert class_logits.grad.shape == (0, 6)


def _random_proposals(gt: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """Jittered copies of the gt boxes plus random boxes, inside a 100 x 100 image."""
    jitter = gt.repeat(n // (2 * len(gt)) + 1, 1)[: n // 2] + torch.randn(n // 2, 4, generator=g) * 4
    xy = torch.rand(n - n // 2, 2, generator=g) * 70
    rand = torch.cat([xy, xy + 5 + torch.rand(n - n // 2, 2, generator=g) * 25], dim=1)
    boxes = torch.cat([jitter, rand]).clamp(0, 100)
    return torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], dim=1)


def test_parity_with_torchvision_sampling_and_loss():
    g = torch.Generator().manual_seed(0)
    gts = [torch.tensor([[10.0, 10, 50, 50], [60, 55, 90, 95], [20, 60, 45, 80]]), torch.tensor([[5.0, 5, 95, 70]])]
    labels = [torch.tensor([3, 5, 1]), torch.tensor([2])]
    proposals = [_random_proposals(gt, 60, g) for gt in gts]
    ours = _loss(batch=16, fraction=0.25, add_gt=True)
    tv = RoIHeads(None, None, None, 0.5, 0.5, 16, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 100)

    torch.manual_seed(123)
    sampled = ours.subsample(
        [BoxList(p, SIZE) for p in proposals], [_target(b.tolist(), l.tolist()) for b, l in zip(gts, labels)]
    )
    torch.manual_seed(123)
    tv_props, tv_idxs, tv_labels, tv_targets = tv.select_training_samples(
        [p.clone() for p in proposals], [{"boxes": b, "labels": l} for b, l in zip(gts, labels)]
    )
    for out, p, i, lab, t in zip(sampled, tv_props, tv_idxs, tv_labels, tv_targets):
        assert_close(out.bbox, p, rtol=0, atol=0)
        assert torch.equal(out.get_field("matched_idxs"), i)
        assert torch.equal(out.get_field("labels"), lab)
        assert_close(out.get_field("regression_targets"), t, rtol=0, atol=0)
    assert sum(int((lab > 0).sum()) for lab in tv_labels) > 2  # the sample has foreground

    k = sum(len(s) for s in sampled)
    class_logits = torch.randn(k, 6, generator=g)
    box_regression = torch.randn(k, 24, generator=g)
    got = ours(class_logits, box_regression, sampled)
    expected = fastrcnn_loss(class_logits, box_regression, tv_labels, tv_targets)
    for a, b in zip(got, expected):
        assert_close(a, b)


def test_builder_reads_config():
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.FG_IOU_THRESHOLD = 0.6
    cfg.MODEL.ROI_HEADS.BG_IOU_THRESHOLD = 0.4
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_HEADS.ADD_GT_PROPOSALS = False
    cfg.MODEL.CLS_AGNOSTIC_BBOX_REG = True
    loss = make_roi_box_loss_evaluator(cfg)
    assert (loss.proposal_matcher.high_threshold, loss.proposal_matcher.low_threshold) == (0.6, 0.4)
    assert not loss.proposal_matcher.allow_low_quality_matches
    assert loss.fg_bg_sampler.batch_size_per_image == 64
    assert loss.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert not loss.add_gt_proposals and loss.cls_agnostic_bbox_reg
