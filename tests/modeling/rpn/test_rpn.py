"""RPNModule: parity with torchvision's RegionProposalNetwork, builder, training/eval outputs."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TVImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from detbench.config import get_cfg
from detbench.modeling.rpn import RPN_HEADS, build_rpn
from detbench.structures import BoxList, ImageList

SIZES = (32, 64, 128, 256, 512)
IMAGE_SIZES = [(128, 192), (100, 150)]  # (height, width); padded batch 128 x 192
CHANNELS = 8


def rpn_cfg(fpn: bool):
    cfg = get_cfg()
    cfg.MODEL.RPN.USE_FPN = fpn
    cfg.MODEL.RPN.ANCHOR_SIZES = SIZES
    cfg.MODEL.RPN.ANCHOR_STRIDE = (4, 8, 16, 32, 64) if fpn else (16,)
    cfg.MODEL.RPN.STRADDLE_THRESH = -1  # torchvision keeps every anchor
    cfg.MODEL.RPN.MIN_SIZE = 1e-3  # torchvision's min_size
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 64
    for split, pre in (("TRAIN", 600), ("TEST", 300)):
        cfg.MODEL.RPN[f"PRE_NMS_TOP_N_{split}"] = pre
        # torchvision's post_nms_top_n counts over all levels: FPN_POST_NMS_TOP_N per image, or
        # without FPN (one level) POST_NMS_TOP_N.
        cfg.MODEL.RPN[f"POST_NMS_TOP_N_{split}"] = -1 if fpn else 200
        cfg.MODEL.RPN[f"FPN_POST_NMS_TOP_N_{split}"] = 200
    cfg.MODEL.RPN.FPN_POST_NMS_PER_BATCH = False
    return cfg


def features(fpn: bool, generator: torch.Generator) -> list[torch.Tensor]:
    strides = (4, 8, 16, 32, 64) if fpn else (16,)
    return [torch.randn(2, CHANNELS, 128 // s, 192 // s, generator=generator) for s in strides]


def torchvision_rpn(fpn: bool, ours) -> RegionProposalNetwork:
    sizes = tuple((s,) for s in SIZES) if fpn else (SIZES,)
    anchor_gen = TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    head = RPNHead(CHANNELS, anchor_gen.num_anchors_per_location()[0])
    head.conv[0][0].load_state_dict(ours.head.conv.state_dict())
    head.cls_logits.load_state_dict(ours.head.cls_logits.state_dict())
    head.bbox_pred.load_state_dict(ours.head.bbox_pred.state_dict())
    return RegionProposalNetwork(
        anchor_gen, head, 0.7, 0.3, 64, 0.5, dict(training=600, testing=300), dict(training=200, testing=200), 0.7
    )


def make_rpn(fpn: bool):
    torch.manual_seed(0)
    ours = build_rpn(rpn_cfg(fpn), CHANNELS)
    with torch.no_grad():  # larger weights than the N(0, 0.01) init, for varied scores and boxes
        for p in ours.head.parameters():
            p.normal_(0, 0.3)
    return ours, torchvision_rpn(fpn, ours)


def targets():
    boxes = [torch.tensor([[10.0, 20, 70, 90], [100, 30, 180, 120]]), torch.tensor([[5.0, 5, 60, 40]])]
    ours = [BoxList(b, (w, h)) for b, (h, w) in zip(boxes, IMAGE_SIZES)]
    return ours, [{"boxes": b} for b in boxes]


@pytest.mark.parametrize("fpn", [True, False])
def test_proposals_equal_torchvision(fpn):
    ours, theirs = make_rpn(fpn)
    feats = features(fpn, torch.Generator().manual_seed(1))
    images = torch.zeros(2, 3, 128, 192)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        proposals, losses = ours(ImageList(images, IMAGE_SIZES), feats)
        expected, _ = theirs(TVImageList(images, IMAGE_SIZES), dict(enumerate(feats)))
    assert losses == {}
    for got, boxes, (h, w) in zip(proposals, expected, IMAGE_SIZES):
        assert 50 < len(got) <= 200 and got.size == (w, h)
        assert_close(got.bbox, boxes, rtol=0, atol=0)
        assert bool((got.get_field("objectness")[:-1] >= got.get_field("objectness")[1:]).all())


@pytest.mark.parametrize("fpn", [True, False])
def test_training_proposals_and_losses_equal_torchvision(fpn):
    ours, theirs = make_rpn(fpn)
    feats = features(fpn, torch.Generator().manual_seed(2))
    images = torch.zeros(2, 3, 128, 192)
    our_targets, tv_targets = targets()
    torch.manual_seed(3)  # the samplers draw the same random permutations
    proposals, losses = ours(ImageList(images, IMAGE_SIZES), feats, our_targets)
    torch.manual_seed(3)
    expected, tv_losses = theirs(TVImageList(images, IMAGE_SIZES), dict(enumerate(feats)), tv_targets)
    for got, boxes in zip(proposals, expected):
        assert_close(got.bbox, boxes, rtol=0, atol=0)
        assert not got.bbox.requires_grad and not got.get_field("objectness").requires_grad
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    assert_close(losses["loss_objectness"], tv_losses["loss_objectness"])
    assert_close(losses["loss_rpn_box_reg"], tv_losses["loss_rpn_box_reg"])
    assert losses["loss_rpn_box_reg"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ours.head.parameters())


def test_rpn_only_training_skips_proposals_and_needs_targets():
    cfg = rpn_cfg(True)
    cfg.MODEL.RPN_ONLY = True
    rpn = build_rpn(cfg, CHANNELS).train()
    feats = features(True, torch.Generator().manual_seed(4))
    proposals, losses = rpn(ImageList(torch.zeros(2, 3, 128, 192), IMAGE_SIZES), feats, targets()[0])
    assert [len(p) for p in proposals] == [0, 0] and proposals[1].has_field("objectness")
    assert torch.isfinite(losses["loss_objectness"])
    with pytest.raises(ValueError, match="targets"):
        rpn(ImageList(torch.zeros(2, 3, 128, 192), IMAGE_SIZES), feats)


def test_per_batch_fpn_top_n_in_training_only():
    cfg = rpn_cfg(True)
    cfg.MODEL.RPN.FPN_POST_NMS_PER_BATCH = True
    cfg.MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN = 150
    cfg.MODEL.RPN.FPN_POST_NMS_TOP_N_TEST = 100
    rpn = build_rpn(cfg, CHANNELS)
    images = ImageList(torch.zeros(2, 3, 128, 192), IMAGE_SIZES)
    feats = features(True, torch.Generator().manual_seed(5))
    proposals, _ = rpn.train()(images, feats, targets()[0])
    assert sum(len(p) for p in proposals) == 150
    with torch.no_grad():
        proposals, _ = rpn.eval()(images, feats)
    assert [len(p) for p in proposals] == [100, 100]


def test_head_registry_and_init():
    assert "SingleConvRPNHead" in RPN_HEADS
    rpn = build_rpn(get_cfg(), 16)
    assert rpn.head.cls_logits.out_channels == 15 and rpn.head.bbox_pred.out_channels == 60
    assert rpn.head.conv.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert float(rpn.head.bbox_pred.bias.detach().abs().sum()) == 0.0
    cfg = get_cfg()
    cfg.MODEL.RPN.RPN_HEAD = "SingleConvRPNHeed"
    with pytest.raises(KeyError, match="MODEL.RPN.RPN_HEAD"):
        build_rpn(cfg, 16)
