"""Box-head PostProcessor: parity with torchvision's RoIHeads.postprocess_detections, and the
filters (score, size, NMS, top-k, class-agnostic boxes, no proposals) on hand-made inputs."""

import math

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.roi_heads import RoIHeads

from detbench.config.defaults import get_cfg
from detbench.extension import has_ops
from detbench.modeling.box_coder import BoxCoder
from detbench.modeling.roi_heads.box_head.inference import PostProcessor, make_roi_box_post_processor
from detbench.structures.bounding_box import BoxList

needs_ops = pytest.mark.skipif(not has_ops(), reason="detbench._C is not built (pip install -e .)")

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _torchvision_like(**kwargs) -> PostProcessor:
    args = dict(score_thresh=0.05, nms=0.5, detections_per_img=100, min_size=1e-2, box_coder=BoxCoder(WEIGHTS))
    return PostProcessor(**{**args, **kwargs})


def _clustered_proposals(n: int, size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """n boxes around 6 centres (so NMS has work), some reaching outside the image."""
    w, h = size
    centres = torch.rand(6, 2, generator=g) * torch.tensor([w, h])
    c = centres[torch.randint(0, 6, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 5
    half = 5 + torch.rand(n, 2, generator=g) * 40
    return torch.cat([c - half, c + half], dim=1)


@needs_ops
@pytest.mark.parametrize("seed", [0, 1])
def test_parity_with_torchvision_postprocess(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = [(120, 90), (64, 100), (80, 80)]  # (width, height); the last image has no proposal
    counts = [300, 40, 0]
    num_classes = 6
    proposals = [_clustered_proposals(n, s, g) for n, s in zip(counts, sizes)]
    k = sum(counts)
    class_logits = torch.randn(k, num_classes, generator=g) * 3
    box_regression = torch.randn(k, 4 * num_classes, generator=g) * 0.5

    results = _torchvision_like()(class_logits, box_regression, [BoxList(p, s) for p, s in zip(proposals, sizes)])
    tv = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, WEIGHTS, 0.05, 0.5, 100)
    tv_boxes, tv_scores, tv_labels = tv.postprocess_detections(
        class_logits, box_regression, proposals, [(h, w) for w, h in sizes]
    )
    for res, size, boxes, scores, labels in zip(results, sizes, tv_boxes, tv_scores, tv_labels):
        assert res.size == size and res.mode == "xyxy"
        assert_close(res.bbox, boxes, rtol=0, atol=0)
        assert_close(res.get_field("scores"), scores, rtol=0, atol=0)
        assert torch.equal(res.get_field("labels"), labels)
    assert len(results[0]) == 100  # the cap is reached
    assert 0 < len(results[1]) < 100 and len(results[2]) == 0
    # NMS really suppressed something in image 1: fewer detections than candidates above 0.05.
    scores_1 = torch.softmax(class_logits[300:], -1)[:, 1:]
    assert len(results[1]) < int((scores_1 > 0.05).sum())


def _one_proposal_inputs(logit_rows, deltas=None, num_classes=3):
    """Proposals [10, 10, 30, 50] repeated; logits as given; deltas zero unless given."""
    k = len(logit_rows)
    proposals = [BoxList(torch.tensor([[10.0, 10.0, 30.0, 50.0]]).repeat(k, 1), (100, 60))]
    class_logits = torch.tensor(logit_rows, dtype=torch.float32)
    box_regression = torch.zeros(k, 4 * num_classes) if deltas is None else deltas
    return class_logits, box_regression, proposals


def test_score_threshold_and_class_labels():
    # Row 0: softmax([0, ln 8, ln 1]) = [0.1, 0.8, 0.1]; class 2 at 0.1 passes 0.05, background is dropped.
    class_logits, box_regression, proposals = _one_proposal_inputs([[0.0, math.log(8), 0.0]])
    (res,) = PostProcessor(score_thresh=0.05, nms=0.5, box_coder=BoxCoder(WEIGHTS))(
        class_logits, box_regression, proposals
    )
    assert res.get_field("labels").tolist() == [1, 2]  # different classes do not suppress each other
    assert_close(res.get_field("scores"), torch.tensor([0.8, 0.1]))
    assert_close(res.bbox, torch.tensor([[10.0, 10.0, 30.0, 50.0]]).repeat(2, 1))
    # Equal logits over 4 classes give scores of exactly 0.25: kept only strictly above the threshold.
    class_logits, box_regression, proposals = _one_proposal_inputs([[0.0] * 4], num_classes=4)
    for thresh, kept in ((0.25, 0), (0.2499, 3)):
        post = PostProcessor(score_thresh=thresh, box_coder=BoxCoder(WEIGHTS))
        assert len(post(class_logits, box_regression, proposals)[0]) == kept


def test_clipping_min_size_and_top_k():
    # Deltas move class 1 of row 0 far left (dx = -100 proposal widths): clipped to width 0, then dropped.
    class_logits, box_regression, proposals = _one_proposal_inputs([[0.0, 5.0, 4.0], [0.0, 3.0, 4.5]])
    box_regression[0, 4] = -100 * WEIGHTS[0]
    res = _torchvision_like()(class_logits, box_regression, proposals)[0]
    assert (res.bbox[:, 2] > res.bbox[:, 0]).all()
    assert res.get_field("scores").tolist() == sorted(res.get_field("scores").tolist(), reverse=True)
    # Class 1: row 0 dropped by size, row 1 kept. Class 2: rows 0 and 1 coincide, NMS keeps the better.
    assert sorted(res.get_field("labels").tolist()) == [1, 2]
    top1 = _torchvision_like(detections_per_img=1)(class_logits, box_regression, proposals)[0]
    assert len(top1) == 1 and top1.get_field("scores")[0] == res.get_field("scores").max()


def test_class_agnostic_regression_decodes_object_columns():
    g = torch.Generator().manual_seed(0)
    class_logits = torch.randn(4, 5, generator=g)
    deltas = torch.randn(4, 8, generator=g) * 0.2
    boxes = torch.tensor([[10.0, 10, 40, 40], [50, 20, 90, 55], [5, 5, 25, 15], [0, 30, 20, 60]])
    proposals = [BoxList(boxes, (100, 80))]
    post = PostProcessor(score_thresh=0.0, nms=1.0, detections_per_img=100, box_coder=BoxCoder(WEIGHTS),
                         cls_agnostic_bbox_reg=True)
    (res,) = post(class_logits, deltas, proposals)
    assert len(res) == 4 * 4  # every (proposal, foreground class) pair survives
    expected = BoxCoder(WEIGHTS).decode(deltas[:, 4:], proposals[0].bbox)
    expected = torch.minimum(expected.clamp(min=0), torch.tensor([100.0, 80, 100, 80]))
    # Each detection's box is its proposal's object box, whatever the class.
    assert_close(torch.unique(res.bbox, dim=0), torch.unique(expected, dim=0))


@needs_ops
def test_no_proposals():
    post = _torchvision_like()
    results = post(torch.zeros(0, 4), torch.zeros(0, 16), [BoxList(torch.zeros(0, 4), (10, 10))] * 2)
    assert [len(r) for r in results] == [0, 0]
    assert results[0].get_field("labels").dtype == torch.int64 and results[0].has_field("scores")


def test_builder_reads_config():
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH = 0.2
    cfg.MODEL.ROI_HEADS.NMS = 0.6
    cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMG = 7
    cfg.MODEL.ROI_HEADS.MIN_DETECTION_SIZE = 0.5
    cfg.MODEL.ROI_HEADS.BBOX_REG_WEIGHTS = (1.0, 2.0, 3.0, 4.0)
    post = make_roi_box_post_processor(cfg)
    assert (post.score_thresh, post.nms, post.detections_per_img, post.min_size) == (0.2, 0.6, 7, 0.5)
    assert post.box_coder.weights == (1.0, 2.0, 3.0, 4.0)
    assert not post.cls_agnostic_bbox_reg
