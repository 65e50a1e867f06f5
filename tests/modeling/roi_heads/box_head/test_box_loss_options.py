"""Box-head loss options (MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE / _WEIGHT / SMOOTH_L1_BETA):
generalized IoU and plain L1 against values derived by hand, and the config checks."""

import math

import pytest
import torch
from torch.testing import assert_close

from detbench.config.defaults import get_cfg
from detbench.config.validate import ConfigError, validate_config
from detbench.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from detbench.modeling.box_coder import BoxCoder
from detbench.modeling.matcher import Matcher
from detbench.modeling.roi_heads.box_head.loss import FastRCNNLossComputation, make_roi_box_loss_evaluator
from detbench.structures.bounding_box import BoxList

SIZE = (100, 100)
GT = BoxList(torch.tensor([[10.0, 10, 50, 50], [60, 60, 90, 90]]), SIZE)
GT.add_field("labels", torch.tensor([3, 5]))
PROPOSALS = BoxList(
    torch.tensor(
        [
            [10.0, 10, 50, 50],  # the ground truth 0 itself
            [62, 60, 92, 90],  # gt 1 moved 2 px right: IoU 840 / 960, enclosing box = union
            [10, 10, 30, 50],  # left half of gt 0: IoU 0.5, enclosing box = gt 0
            [0, 0, 5, 5],  # background
        ]
    ),
    SIZE,
)


def _loss(loss_type="giou", weight=1.0, beta=1 / 9):
    return FastRCNNLossComputation(
        Matcher(0.5, 0.5, allow_low_quality_matches=False),
        BalancedPositiveNegativeSampler(512, 0.25),
        BoxCoder((10.0, 10.0, 5.0, 5.0)),
        add_gt_proposals=False,
        smooth_l1_beta=beta,
        loss_type=loss_type,
        loss_weight=weight,
    )


def _sampled(loss):
    sampled = loss.subsample([PROPOSALS], [GT])
    assert sampled[0].get_field("labels").tolist() == [3, 5, 3, 0]
    return sampled


def test_giou_of_unmoved_proposals():
    loss = _loss()
    box_regression = torch.zeros(4, 24, requires_grad=True)  # decoded boxes = the proposals
    _, loss_box = loss(torch.zeros(4, 6), box_regression, _sampled(loss))
    # 1 - GIoU per positive: 0, 1 - 840/960 = 0.125, 1 - 0.5; summed, over the 4 sampled RoIs.
    assert_close(loss_box, torch.tensor((0.0 + 0.125 + 0.5) / 4))
    loss_box.backward()
    touched = box_regression.grad.reshape(4, 6, 4).abs().sum(dim=2) > 0
    assert touched.nonzero().tolist() == [[1, 5], [2, 3]]  # proposal 0 sits at the minimum


def test_giou_penalises_the_empty_part_of_the_enclosing_box():
    loss = _loss(weight=2.0)
    box_regression = torch.zeros(4, 24)
    # dx = 10 * 50 / 40 moves proposal 0 by 50 px: [60, 10, 100, 50], disjoint from gt 0.
    box_regression[0, 3 * 4] = 12.5
    _, loss_box = loss(torch.zeros(4, 6), box_regression, _sampled(loss))
    # IoU 0; enclosing [10, 10, 100, 50] = 3600 px, union 3200: GIoU = -400 / 3600.
    per_box = (1 + 400 / 3600) + 0.125 + 0.5
    assert_close(loss_box, torch.tensor(2.0 * per_box / 4))


def test_beta_zero_is_plain_l1():
    loss = _loss(loss_type="smooth_l1", beta=0.0)
    _, loss_box = loss(torch.zeros(4, 6), torch.zeros(4, 24), _sampled(loss))
    # Targets of the positives: proposal 1 dx = 10 * (75 - 77) / 30, proposal 2 dx = 10 * 10 / 20
    # and dw = 5 log 2; |d| summed, over the 4 sampled RoIs.
    assert_close(loss_box, torch.tensor((2 / 3 + 5 + 5 * math.log(2)) / 4))


def test_builder_reads_the_keys():
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "giou"
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 2.5
    cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
    loss = make_roi_box_loss_evaluator(cfg)
    assert (loss.loss_type, loss.loss_weight, loss.smooth_l1_beta) == ("giou", 2.5, 0.0)
    default = make_roi_box_loss_evaluator(get_cfg())
    assert (default.loss_type, default.loss_weight, default.smooth_l1_beta) == ("smooth_l1", 1.0, 1 / 9)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("BBOX_REG_LOSS_TYPE", "iou", "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = 'iou': must be one of"),
        ("BBOX_REG_LOSS_WEIGHT", -1.0, "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = -1.0: must be a number >= 0"),
        ("SMOOTH_L1_BETA", -0.1, "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = -0.1: must be a number >= 0"),
    ],
)
def test_bad_values_are_named(key, value, message):
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD[key] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        validate_config(cfg)


def test_unknown_type_refused_by_the_class():
    with pytest.raises(ValueError, match="'iou'"):
        _loss(loss_type="iou")
