"""Box-head predictors: shapes (K = 0 too), class-agnostic columns, init and values."""

import pytest
import torch
from torch.testing import assert_close

from detbench.config.defaults import get_cfg
from detbench.modeling.roi_heads.box_head.roi_box_predictors import (
    ROI_BOX_PREDICTOR,
    FastRCNNPredictor,
    FPNPredictor,
    build_roi_box_predictor,
)


def test_registry_holds_both_predictors():
    assert set(ROI_BOX_PREDICTOR) == {"FastRCNNPredictor", "FPNPredictor"}


@pytest.mark.parametrize("name", ["FastRCNNPredictor", "FPNPredictor"])
@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("k", [5, 0])
def test_predictor_shapes(name, agnostic, k):
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.PREDICTOR = name
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 7
    cfg.MODEL.CLS_AGNOSTIC_BBOX_REG = agnostic
    predictor = build_roi_box_predictor(cfg, 16)
    x = torch.rand(k, 16, 3, 3) if name == "FastRCNNPredictor" else torch.rand(k, 16)
    class_logits, box_regression = predictor(x)
    assert class_logits.shape == (k, 7)
    assert box_regression.shape == (k, 8 if agnostic else 28)


def test_fast_rcnn_predictor_averages_spatially():
    predictor = FastRCNNPredictor(16, num_classes=4)
    x = torch.rand(3, 16, 4, 5, generator=torch.Generator().manual_seed(0))
    mean = x.mean(dim=(2, 3))
    class_logits, box_regression = predictor(x)
    assert_close(class_logits, mean @ predictor.cls_score.weight.T + predictor.cls_score.bias)
    assert_close(box_regression, mean @ predictor.bbox_pred.weight.T + predictor.bbox_pred.bias)


def test_fpn_predictor_accepts_1x1_maps_only():
    predictor = FPNPredictor(16, num_classes=4)
    x = torch.rand(3, 16)
    for got, expected in zip(predictor(x[:, :, None, None]), predictor(x)):
        assert_close(got, expected)
    with pytest.raises(ValueError, match=r"\[K, C, 1, 1\]"):
        predictor(torch.rand(3, 16, 2, 2))


def test_predictor_init_and_names():
    torch.manual_seed(0)
    predictor = FPNPredictor(256, num_classes=81)
    assert {n for n, _ in predictor.named_parameters()} == {
        "cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias"
    }
    # normal(0, 0.01) and normal(0, 0.001) over 20k / 83k weights: the sample std is within a few %.
    assert_close(predictor.cls_score.weight.std().item(), 0.01, rtol=0.05, atol=0)
    assert_close(predictor.bbox_pred.weight.std().item(), 0.001, rtol=0.05, atol=0)
    assert not predictor.cls_score.bias.any() and not predictor.bbox_pred.bias.any()


def test_predictor_rejects_one_class():
    with pytest.raises(ValueError, match="background"):
        FPNPredictor(8, num_classes=1)
