"""ROIKeypointHead built from configs: registries, layers against torchvision's
KeypointRCNNHeads / KeypointRCNNPredictor, the loss against keypointrcnn_loss, and one
train and one eval step."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNPredictor as TVKeypointRCNNPredictor
from torchvision.models.detection.roi_heads import keypointrcnn_loss

from detbench.config.defaults import get_cfg
from detbench.extension import has_ops
from detbench.modeling.roi_heads.keypoint_head import (
    ROI_KEYPOINT_FEATURE_EXTRACTORS,
    ROI_KEYPOINT_PREDICTOR,
    KeypointRCNNPredictor,
    build_roi_keypoint_head,
    keypoint_rcnn_loss,
)
from detbench.structures import BoxList
from detbench.structures.keypoint import PersonKeypoints

needs_ops = pytest.mark.skipif(not has_ops(), reason="detbench._C is not built (pip install -e .)")

IMAGE_WH = (64, 48)


def small_cfg():
    cfg = get_cfg()
    node = cfg.MODEL.ROI_KEYPOINT_HEAD
    node.POOLER_SCALES = (1 / 4, 1 / 8)
    node.POOLER_RESOLUTION = 7
    node.POOLER_SAMPLING_RATIO = 2
    node.CONV_LAYERS = (8, 8, 8)
    return cfg


def inputs(seed: int = 0):
    """Two images. Image 0 has 3 persons; person 1 has no labelled keypoint. Image 1 has
    no ground truth. Proposals carry "labels" and "matched_idxs" as the box head gives them."""
    g = torch.Generator().manual_seed(seed)
    w, h = IMAGE_WH
    features = [torch.randn(2, 4, h // s, w // s, generator=g) for s in (4, 8)]
    gt_boxes = torch.tensor([[2.0, 2.0, 30.0, 40.0], [30.0, 5.0, 60.0, 45.0], [10.0, 10.0, 50.0, 30.0]])
    kps = torch.cat([gt_boxes[:, None, :2] + torch.rand(3, 17, 2, generator=g) * 28, torch.ones(3, 17, 1) * 2], 2)
    kps[:, ::3, 2] = 0  # some keypoints not labelled
    kps[1, :, 2] = 0  # person 1: none labelled
    targets = [BoxList(gt_boxes, IMAGE_WH), BoxList(torch.zeros(0, 4), IMAGE_WH)]
    targets[0].add_field("labels", torch.ones(3, dtype=torch.int64))
    targets[0].add_field("keypoints", PersonKeypoints(kps, IMAGE_WH))
    targets[1].add_field("labels", torch.zeros(0, dtype=torch.int64))
    targets[1].add_field("keypoints", PersonKeypoints([], IMAGE_WH))
    proposals = []
    for labels, matched in (([1, 0, 1, 1, 1, 0], [0, 0, 1, 2, 0, 0]), ([0, 0], [0, 0])):
        boxes = gt_boxes[torch.tensor(matched)] + torch.randn(len(labels), 4, generator=g)
        proposals.append(BoxList(boxes, IMAGE_WH))
        proposals[-1].add_field("labels", torch.tensor(labels))
        proposals[-1].add_field("matched_idxs", torch.tensor(matched))
    return features, proposals, targets


def test_registries_and_layers():
    assert set(ROI_KEYPOINT_FEATURE_EXTRACTORS) == {"KeypointRCNNFeatureExtractor"}
    assert set(ROI_KEYPOINT_PREDICTOR) == {"KeypointRCNNPredictor"}
    head = build_roi_keypoint_head(small_cfg(), 4)
    names = {n for n, _ in head.named_parameters()}
    expected = {f"feature_extractor.conv_fcn{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    expected |= {"predictor.kps_score_lowres.weight", "predictor.kps_score_lowres.bias"}
    assert names == expected
    cfg = small_cfg()
    cfg.MODEL.ROI_KEYPOINT_HEAD.PREDICTOR = "KeypointPredictor"
    with pytest.raises(KeyError, match="MODEL.ROI_KEYPOINT_HEAD.PREDICTOR"):
        build_roi_keypoint_head(cfg, 4)


def test_layers_match_torchvision():
    torch.manual_seed(0)
    head = build_roi_keypoint_head(small_cfg(), 4)
    theirs = KeypointRCNNHeads(4, [8, 8, 8])
    for i in range(3):
        theirs[2 * i].load_state_dict(getattr(head.feature_extractor, f"conv_fcn{i + 1}").state_dict())
    x = torch.randn(3, 4, 7, 7)
    assert_close(head.feature_extractor.apply_convs(x), theirs(x))
    predictor = KeypointRCNNPredictor(8, 17)
    tv_predictor = TVKeypointRCNNPredictor(8, 17)
    tv_predictor.load_state_dict(predictor.state_dict())
    y = torch.randn(3, 8, 7, 7)
    assert predictor(y).shape == (3, 17, 28, 28)
    assert_close(predictor(y), tv_predictor(y))
    assert predictor(y[:0]).shape == (0, 17, 28, 28)


def test_loss_matches_torchvision():
    # Image 0 only: torchvision cannot index the keypoints of an image without ground truth.
    _, proposals, targets = inputs()
    proposals, targets = proposals[:1], targets[:1]
    logits = torch.randn(6, 17, 14, 14, requires_grad=True)
    got = keypoint_rcnn_loss(logits, proposals, targets)
    expected = keypointrcnn_loss(
        logits,
        [p.bbox for p in proposals],
        [t.get_field("keypoints").keypoints for t in targets],
        [p.get_field("matched_idxs") for p in proposals],
    )
    assert_close(got, expected)
    assert_close(torch.autograd.grad(got, logits)[0], torch.autograd.grad(expected, logits)[0])


def test_loss_without_valid_keypoint_is_a_connected_zero():
    _, proposals, targets = inputs()
    kps = targets[0].get_field("keypoints").keypoints.clone()
    kps[..., 2] = 0
    targets[0].add_field("keypoints", PersonKeypoints(kps, IMAGE_WH))
    logits = torch.randn(8, 17, 14, 14, requires_grad=True)
    loss = keypoint_rcnn_loss(logits, proposals, targets)  # image 1 has proposals but no ground truth
    assert loss.item() == 0 and loss.requires_grad
    empty = torch.randn(0, 17, 14, 14, requires_grad=True)
    assert keypoint_rcnn_loss(empty, [p[p.get_field("labels") > 1] for p in proposals], targets).item() == 0


@needs_ops
def test_train_step():
    torch.manual_seed(0)
    head = build_roi_keypoint_head(small_cfg(), 4).train()
    features, proposals, targets = inputs()
    x, result, losses = head(features, proposals, targets)
    # Positives of image 0 are rows 0, 2, 3, 4; row 2 matches person 1 (nothing labelled).
    assert x.shape == (3, 8, 7, 7) and result == proposals and set(losses) == {"loss_kp"}
    # Dropping proposals without a labelled keypoint leaves torchvision's loss over all positives.
    positives = [p[p.get_field("labels") > 0] for p in proposals]
    with torch.no_grad():
        all_logits = head.predictor(head.feature_extractor(features, positives))
    expected = keypointrcnn_loss(
        all_logits,
        [p.bbox for p in positives],
        [t.get_field("keypoints").keypoints for t in targets],
        [p.get_field("matched_idxs") for p in positives],
    )
    assert_close(losses["loss_kp"].detach(), expected)
    losses["loss_kp"].backward()
    assert all(p.grad is not None for p in head.parameters())


@needs_ops
def test_train_step_reuses_box_features_and_handles_no_ground_truth():
    head = build_roi_keypoint_head(small_cfg(), 4).train()
    features, proposals, targets = inputs()
    box_features = torch.randn(8, 8, 7, 7)
    x, _, losses = head(features, proposals, targets, box_features=box_features)
    assert_close(x, box_features[torch.tensor([0, 3, 4])])
    x, _, losses = head(features, proposals[1:], targets[1:])
    assert x.shape[0] == 0 and losses["loss_kp"].item() == 0


@needs_ops
def test_eval_step():
    head = build_roi_keypoint_head(small_cfg(), 4).eval()
    features, proposals, _ = inputs()
    detections = [p.copy_with_fields("labels") for p in proposals]
    with torch.no_grad():
        _, result, losses = head(features, detections)
    assert losses == {}
    kps = result[0].get_field("keypoints")
    assert isinstance(kps, PersonKeypoints) and kps.keypoints.shape == (6, 17, 3)
    assert result[1].get_field("keypoints_scores").shape == (2, 17)
    # Decoded keypoints lie in their box (cell centres of the box resampled to its pixels).
    boxes = detections[0].bbox
    assert (kps.keypoints[..., 0] >= boxes[:, None, 0]).all() and (kps.keypoints[..., 0] <= boxes[:, None, 2]).all()
