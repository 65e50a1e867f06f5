"""RetinaNet: loss and post-processing against torchvision's, heads, anchors, empty images, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.models.detection.retinanet import RetinaNetHead as TVRetinaNetHead
from torchvision.ops import box_iou

from detbench.config import ConfigError, load_config
from detbench.engine.trainer import check_losses_finite
from detbench.modeling.backbone.fpn import LastLevelP6P7
from detbench.modeling.box_coder import BoxCoder
from detbench.modeling.detector import build_detection_model
from detbench.modeling.matcher import Matcher
from detbench.modeling.rpn.retinanet.inference import RetinaNetPostProcessor
from detbench.modeling.rpn.retinanet.loss import RetinaNetLossComputation
from detbench.modeling.rpn.retinanet.retinanet import RetinaNetHead, octave_sizes
from detbench.structures import BoxList

ROOT = Path(__file__).resolve().parents[3]
SHAPES = ROOT / "configs" / "quickstart" / "retinanet_R_18_FPN_shapes.yaml"
K, A, H, W = 4, 9, 6, 5  # classes, anchors per location, one level of H x W cells
R = A * H * W

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _anchors(g: torch.Generator) -> torch.Tensor:
    """[R, 4] boxes on a 100x120 image, 8-60 px wide."""
    corner = torch.rand(R, 2, generator=g) * 90
    size = 8 + torch.rand(R, 2, generator=g) * 52
    return torch.cat([corner, corner + size], dim=1)


def _targets(g: torch.Generator, anchors: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Image 0: three boxes near anchors (positives, ignored and negatives); image 1: no box."""
    boxes = anchors[[3, 50, 100]] + torch.randn(3, 4, generator=g)
    return [(boxes, torch.tensor([1, 4, 2])), (torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))]


def _to_head_layout(flat: torch.Tensor) -> torch.Tensor:
    """[N, R, C] rows (location, anchor) -> the head's [N, A * C, H, W]."""
    n, _, c = flat.shape
    return flat.reshape(n, H, W, A, c).permute(0, 3, 4, 1, 2).reshape(n, A * c, H, W)


def _boxlists(anchors, targets):
    per_image_anchors, boxlists = [], []
    for boxes, labels in targets:
        a = BoxList(anchors, (120, 100))
        a.add_field("visibility", torch.ones(R, dtype=torch.bool))
        per_image_anchors.append([a])
        t = BoxList(boxes, (120, 100))
        t.add_field("labels", labels)
        boxlists.append(t)
    return per_image_anchors, boxlists


def test_loss_matches_torchvision_retinanet_head():
    g = torch.Generator().manual_seed(0)
    anchors = _anchors(g)
    targets = _targets(g, anchors)
    # torchvision's classifier has a background column 0; made hopeless so it adds ~0.
    logits = torch.randn(2, R, K + 1, generator=g) * 2
    logits[..., 0] = -30.0
    deltas = torch.randn(2, R, 4, generator=g) * 0.3
    matcher = tv_det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
    matched = [matcher(box_iou(b, anchors)) if len(b) else torch.full((R,), -1) for b, _ in targets]
    assert (matched[0] >= 0).sum() > 3 and (matched[0] == -2).any()  # positives and ignored anchors exist
    head = TVRetinaNetHead(8, A, K + 1)
    expected = head.compute_loss([{"boxes": b, "labels": lab} for b, lab in targets],
                                 {"cls_logits": logits, "bbox_regression": deltas}, [anchors, anchors], matched)

    loss = RetinaNetLossComputation(Matcher(0.5, 0.4, True), BoxCoder((1.0, 1.0, 1.0, 1.0)), gamma=2.0, alpha=0.25,
                                    beta=0.0, reg_weight=4.0, normalization="torchvision")
    got = loss(*_boxlists(anchors, targets)[:1], [_to_head_layout(logits[..., 1:])], [_to_head_layout(deltas)],
               _boxlists(anchors, targets)[1])
    assert_close(got["loss_retina_cls"], expected["classification"])
    assert_close(got["loss_retina_reg"], expected["bbox_regression"])


def test_maskrcnn_benchmark_normalisation_by_hand():
    """cls: sum / (positives + images); reg: smooth L1 sum / (positives * BBOX_REG_WEIGHT)."""
    g = torch.Generator().manual_seed(1)
    anchors = _anchors(g)
    targets = _targets(g, anchors)
    logits, deltas = torch.randn(2, R, K, generator=g), torch.randn(2, R, 4, generator=g) * 0.3
    args = dict(matcher=Matcher(0.5, 0.4, True), box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)), gamma=2.0, alpha=0.25,
                beta=0.11, reg_weight=4.0)
    anchor_lists, boxlists = _boxlists(anchors, targets)
    got = RetinaNetLossComputation(**args)(anchor_lists, [_to_head_layout(logits)], [_to_head_layout(deltas)],
                                           boxlists)
    per_image = RetinaNetLossComputation(**args, normalization="torchvision")
    # Rebuild the sums from the per-image normalised terms of the other mode.
    cls_sum, reg_sum, positives = 0.0, 0.0, 0
    for i in range(2):
        labels, _ = per_image.prepare_targets(BoxList(anchors, (120, 100)), boxlists[i])
        p = int((labels > 0).sum())
        single = per_image([anchor_lists[i]], [_to_head_layout(logits[i:i + 1])], [_to_head_layout(deltas[i:i + 1])],
                           [boxlists[i]])
        cls_sum += single["loss_retina_cls"] * max(1, p)
        reg_sum += single["loss_retina_reg"] * max(1, p)
        positives += p
    assert positives > 0
    assert_close(got["loss_retina_cls"], cls_sum / (positives + 2))
    assert_close(got["loss_retina_reg"], reg_sum / (positives * 4.0))


def test_image_without_annotations_has_only_negatives():
    g = torch.Generator().manual_seed(2)
    anchors = _anchors(g)
    loss = RetinaNetLossComputation(Matcher(0.5, 0.4, True), BoxCoder((1.0,) * 4), 2.0, 0.25, 0.11, 4.0)
    labels, _ = loss.prepare_targets(BoxList(anchors, (120, 100)), _boxlists(anchors, _targets(g, anchors))[1][1])
    assert (labels == 0).all()
    logits = torch.randn(1, A * K, H, W, generator=g, requires_grad=True)
    deltas = torch.randn(1, A * 4, H, W, generator=g, requires_grad=True)
    anchor_lists, boxlists = _boxlists(anchors, _targets(g, anchors)[1:])
    out = loss(anchor_lists, [logits], [deltas], boxlists)
    assert out["loss_retina_reg"] == 0 and out["loss_retina_cls"] > 0
    sum(out.values()).backward()
    assert logits.grad.abs().sum() > 0 and torch.isfinite(logits.grad).all()


def test_post_processing_matches_torchvision():
    """The batched path against torchvision's per-image, per-level postprocess_detections."""
    from torchvision.models.detection.retinanet import RetinaNet as TVRetinaNet

    g = torch.Generator().manual_seed(3)
    levels = [(6, 5), (3, 3)]
    anchors = [_anchors(g)[: A * h * w] for h, w in levels]
    logits = [torch.randn(2, A * h * w, K + 1, generator=g) * 2 - 2 for h, w in levels]
    for level in logits:
        level[..., 0] = -30.0
    deltas = [torch.randn(2, A * h * w, 4, generator=g) * 0.2 for h, w in levels]
    tv = TVRetinaNet.__new__(TVRetinaNet)  # only postprocess_detections' attributes are needed
    tv.box_coder = tv_det_utils.BoxCoder((1.0, 1.0, 1.0, 1.0))
    tv.score_thresh, tv.nms_thresh, tv.detections_per_img, tv.topk_candidates = 0.2, 0.5, 30, 40
    sizes = [(100, 120), (90, 110)]
    expected = tv.postprocess_detections({"cls_logits": logits, "bbox_regression": deltas},
                                         [anchors, anchors], sizes)
    selector = RetinaNetPostProcessor(0.2, 40, 0.5, 30, BoxCoder((1.0, 1.0, 1.0, 1.0)))
    per_image = [[BoxList(a, (w, h)) for a in anchors] for h, w in sizes]
    got = selector(per_image, [c[..., 1:] for c in logits], deltas)
    for ours, theirs in zip(got, expected):
        assert len(ours) == len(theirs["boxes"]) > 5
        assert_close(ours.get_field("labels"), theirs["labels"])
        assert_close(ours.get_field("scores"), theirs["scores"])
        assert_close(ours.bbox, theirs["boxes"])


def test_head_shapes_and_prior_probability():
    head = RetinaNetHead(16, num_anchors=9, num_classes=5, num_convs=2, prior_prob=0.01)
    logits, deltas = head([torch.randn(2, 16, 8, 6), torch.randn(2, 16, 4, 3)])
    assert [t.shape for t in logits] == [(2, 45, 8, 6), (2, 45, 4, 3)]
    assert [t.shape for t in deltas] == [(2, 36, 8, 6), (2, 36, 4, 3)]
    assert_close(torch.sigmoid(head.cls_logits.bias), torch.full((45,), 0.01))
    assert len(head.cls_tower) == 4 and len(head.bbox_tower) == 4  # conv, ReLU, conv, ReLU
    with pytest.raises(ValueError, match="prior_prob"):
        RetinaNetHead(16, 9, 5, prior_prob=1.0)


def test_octave_sizes_and_p6p7():
    assert octave_sizes(32, 2.0, 3, round_down=True) == (32.0, 40.0, 50.0)  # torchvision's
    assert_close(torch.tensor(octave_sizes(32, 2.0, 3, round_down=False)),
                 torch.tensor([32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)]))
    block = LastLevelP6P7(8, 4, use_c5=True)
    p6, p7 = block(torch.randn(1, 4, 9, 7), torch.randn(1, 8, 9, 7))
    assert p6.shape == (1, 4, 5, 4) and p7.shape == (1, 4, 3, 2)
    with pytest.raises(ValueError, match="C5"):
        block(torch.randn(1, 4, 9, 7))


def test_training_on_images_without_annotations_and_non_finite_loss_named():
    cfg = load_config(SHAPES, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_detection_model(cfg).train()
    empty = BoxList(torch.zeros(0, 4), (64, 64))
    empty.add_field("labels", torch.zeros(0, dtype=torch.int64))
    losses = model(torch.randn(2, 3, 64, 64), [empty, empty])
    assert losses["loss_retina_reg"] == 0 and math.isfinite(losses["loss_retina_cls"].item())
    sum(losses.values()).backward()
    bad = model(torch.full((1, 3, 64, 64), float("nan")), [empty])
    with pytest.raises(FloatingPointError, match="loss_retina_cls = nan at iteration 7"):
        check_losses_finite(bad, 7)


@pytest.mark.parametrize("key, value", [("MODEL.RETINANET.NUM_CLASSES", "1"), ("MODEL.RETINANET.LOSS_GAMMA", "-1.0"),
                                        ("MODEL.RETINANET.ANCHOR_STRIDES", "(4, 8, 16, 32, 64)"),
                                        ("MODEL.RETINANET.ANCHOR_SIZES", "(32, 64, 128)"),
                                        ("MODEL.RETINANET.PRIOR_PROB", "0.0"),
                                        ("MODEL.RETINANET.LOSS_NORMALIZATION", "detectron"),
                                        ("MODEL.BACKBONE.CONV_BODY", "R-18-FPN")])
def test_impossible_values_fail_at_load_time_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(SHAPES, [key, value])
