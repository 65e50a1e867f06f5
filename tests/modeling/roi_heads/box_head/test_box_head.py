"""ROIBoxHead end to end: built from configs (FPN and C4), one train and one eval step, and
parity with torchvision's RoIHeads (MultiScaleRoIAlign + TwoMLPHead + FastRCNNPredictor)."""

from collections import OrderedDict

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor as TVPredictor
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign

from detbench.config.defaults import get_cfg
from detbench.extension import has_ops
from detbench.modeling.roi_heads.box_head import build_roi_box_head
from detbench.structures.bounding_box import BoxList

pytestmark = pytest.mark.skipif(not has_ops(), reason="detbench._C is not built (pip install -e .)")

IMAGE_WH = (160, 128)
FPN_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
NUM_CLASSES = 5


def _cfg(c4: bool):
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.MIN_DETECTION_SIZE = 1e-2
    if c4:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 16  # res5 head: 64 -> 128 channels
        cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 4
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 6
    else:
        cfg.MODEL.ROI_HEADS.USE_FPN = True
        cfg.MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR = "FPN2MLPFeatureExtractor"
        cfg.MODEL.ROI_BOX_HEAD.PREDICTOR = "FPNPredictor"
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
        cfg.MODEL.ROI_BOX_HEAD.POOLER_SCALES = FPN_SCALES
        cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = 32
    return cfg


def _inputs(channels: int, scales, seed: int = 0):
    """Two images: one with two objects, one without ground truth; 40 proposals each."""
    g = torch.Generator().manual_seed(seed)
    w, h = IMAGE_WH
    features = [torch.randn(2, channels, int(h * s), int(w * s), generator=g) for s in scales]
    gt = torch.tensor([[10.0, 20.0, 70.0, 90.0], [90.0, 10.0, 150.0, 60.0]])
    targets = [BoxList(gt, IMAGE_WH), BoxList(torch.zeros(0, 4), IMAGE_WH)]
    targets[0].add_field("labels", torch.tensor([2, 4]))
    targets[1].add_field("labels", torch.zeros(0, dtype=torch.int64))
    proposals = []
    for _ in range(2):
        jitter = gt.repeat(10, 1) + torch.randn(20, 4, generator=g) * 6
        xy = torch.rand(20, 2, generator=g) * 100
        rand = torch.cat([xy, xy + 8 + torch.rand(20, 2, generator=g) * 50], dim=1)
        boxes = torch.cat([jitter, rand]).clamp(min=0, max=128)
        proposals.append(BoxList(boxes, IMAGE_WH))
    return features, proposals, targets


@pytest.mark.parametrize("c4", [False, True])
def test_train_and_eval_step(c4):
    torch.manual_seed(0)
    cfg = _cfg(c4)
    in_channels = 64 if c4 else 8
    head = build_roi_box_head(cfg, in_channels)
    features, proposals, targets = _inputs(in_channels, cfg.MODEL.ROI_BOX_HEAD.POOLER_SCALES)

    head.train()
    x, sampled, losses = head(features, proposals, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert x.shape[0] == sum(len(s) for s in sampled) and x.shape[1] == (128 if c4 else 32)
    # Batch 32 at 25 %: at most 8 positives; image 1 (40 background proposals) fills its batch.
    assert len(sampled[0]) <= 32 and 0 < (sampled[0].get_field("labels") > 0).sum() <= 8
    assert len(sampled[1]) == 32
    assert not sampled[1].get_field("labels").any()  # no ground truth: all background
    sum(losses.values()).backward()
    assert head.predictor.bbox_pred.weight.grad.abs().sum() > 0

    head.eval()
    with torch.no_grad():
        x, detections, losses = head(features, proposals)
    assert losses == {} and x.shape[0] == 80
    for det in detections:
        assert det.size == IMAGE_WH and set(det.fields()) == {"scores", "labels"}
        labels = det.get_field("labels")
        assert labels.dtype == torch.int64 and ((labels >= 1) & (labels < NUM_CLASSES)).all()


def test_missing_targets_in_training():
    head = build_roi_box_head(_cfg(False), 8).train()
    features, proposals, _ = _inputs(8, FPN_SCALES)
    with pytest.raises(ValueError, match="needs targets"):
        head(features, proposals)


def _torchvision_heads(head) -> RoIHeads:
    """torchvision's RoIHeads configured like ``head``, with its weights."""
    box_head = TwoMLPHead(8 * 7 * 7, 32)
    predictor = TVPredictor(32, NUM_CLASSES)
    box_head.load_state_dict(head.feature_extractor.state_dict())
    predictor.load_state_dict(head.predictor.state_dict())
    pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    return RoIHeads(pool, box_head, predictor, 0.5, 0.5, 32, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 100)


def test_parity_with_torchvision_roi_heads():
    torch.manual_seed(0)
    head = build_roi_box_head(_cfg(False), 8)
    tv = _torchvision_heads(head)
    assert_close(tv.box_head.fc6.weight, head.feature_extractor.fc6.weight)
    features, proposals, targets = _inputs(8, FPN_SCALES, seed=1)
    tv_features = OrderedDict((str(i), f) for i, f in enumerate(features))
    tv_proposals = [p.bbox.clone() for p in proposals]
    tv_targets = [{"boxes": t.bbox, "labels": t.get_field("labels")} for t in targets]
    image_shapes = [IMAGE_WH[::-1]] * 2

    head.train()
    tv.train()
    torch.manual_seed(7)
    _, sampled, losses = head(features, proposals, targets)
    torch.manual_seed(7)
    _, tv_losses = tv(tv_features, tv_proposals, image_shapes, tv_targets)
    for name in ("loss_classifier", "loss_box_reg"):
        assert_close(losses[name], tv_losses[name])

    head.eval()
    tv.eval()
    with torch.no_grad():
        _, detections, _ = head(features, proposals)
        tv_detections, _ = tv(tv_features, [p.bbox for p in proposals], image_shapes)
    assert sum(len(d) for d in detections) > 0
    for det, tv_det in zip(detections, tv_detections):
        assert_close(det.bbox, tv_det["boxes"])
        assert_close(det.get_field("scores"), tv_det["scores"])
        assert torch.equal(det.get_field("labels"), tv_det["labels"])
