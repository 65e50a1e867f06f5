"""ROIMaskHead built from configs: registries, layer names, parity of the layers with
torchvision's MaskRCNNHeads / MaskRCNNPredictor, and one train and one eval step."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from detbench.config.defaults import get_cfg
from detbench.extension import has_ops
from detbench.modeling.roi_heads.mask_head import (
    ROI_MASK_FEATURE_EXTRACTORS,
    ROI_MASK_PREDICTOR,
    MaskRCNNC4Predictor,
    build_roi_mask_head,
    mask_rcnn_loss,
)
from detbench.structures import BoxList
from detbench.structures.segmentation_mask import SegmentationMask

needs_ops = pytest.mark.skipif(not has_ops(), reason="detbench._C is not built (pip install -e .)")

IMAGE_WH = (64, 48)
NUM_CLASSES = 4


def fpn_cfg(use_gn: bool = False):
    cfg = get_cfg()
    node = cfg.MODEL.ROI_MASK_HEAD
    node.FEATURE_EXTRACTOR = "MaskRCNNFPNFeatureExtractor"
    node.POOLER_SCALES = (1 / 4, 1 / 8)
    node.POOLER_RESOLUTION = 7
    node.POOLER_SAMPLING_RATIO = 2
    node.CONV_LAYERS = (8, 8)
    node.RESOLUTION = 14
    node.USE_GN = use_gn
    cfg.MODEL.GROUP_NORM.NUM_GROUPS = 4
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = NUM_CLASSES
    return cfg


def c4_cfg():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 16  # res5 head: 64 -> 128 channels
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 4
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 6
    cfg.MODEL.ROI_MASK_HEAD.CONV_LAYERS = (8,)
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = NUM_CLASSES
    return cfg


def inputs(seed: int = 0):
    """Two images (the second without ground truth); features at strides 4 and 8, 4 channels;
    proposals as the box head hands them over ("labels", "matched_idxs")."""
    g = torch.Generator().manual_seed(seed)
    w, h = IMAGE_WH
    features = [torch.randn(2, 4, h // s, w // s, generator=g) for s in (4, 8)]
    polygons = [[[4.0, 4.0, 30.0, 6.0, 28.0, 30.0, 5.0, 26.0]], [[34.0, 10.0, 60.0, 10.0, 47.0, 44.0]]]
    targets = [BoxList(torch.tensor([[4.0, 4.0, 30.0, 30.0], [34.0, 10.0, 60.0, 44.0]]), IMAGE_WH)]
    targets[0].add_field("labels", torch.tensor([3, 1]))
    targets[0].add_field("masks", SegmentationMask(polygons, IMAGE_WH))
    targets.append(BoxList(torch.zeros(0, 4), IMAGE_WH))
    targets[1].add_field("labels", torch.zeros(0, dtype=torch.int64))
    targets[1].add_field("masks", SegmentationMask([], IMAGE_WH))
    proposals = []
    for labels, matched in (([3, 0, 1, 3, 0], [0, 0, 1, 0, 0]), ([0, 0, 0], [0, 0, 0])):
        xy = torch.rand(len(labels), 2, generator=g) * 30
        proposals.append(BoxList(torch.cat([xy, xy + 4 + torch.rand(len(labels), 2, generator=g) * 25], 1), IMAGE_WH))
        proposals[-1].add_field("labels", torch.tensor(labels))
        proposals[-1].add_field("matched_idxs", torch.tensor(matched))
    return features, proposals, targets


def test_registries_hold_the_maskrcnn_benchmark_names():
    assert set(ROI_MASK_FEATURE_EXTRACTORS) == {"ResNet50Conv5ROIFeatureExtractor", "MaskRCNNFPNFeatureExtractor"}
    assert set(ROI_MASK_PREDICTOR) == {"MaskRCNNC4Predictor"}
    cfg = fpn_cfg()
    cfg.MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR = "MaskRCNNFPNFeatureExtracter"
    with pytest.raises(KeyError, match="MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR"):
        build_roi_mask_head(cfg, 4)


@pytest.mark.parametrize("use_gn", [False, True])
def test_fpn_head_layers(use_gn):
    head = build_roi_mask_head(fpn_cfg(use_gn), 4)
    names = {n for n, _ in head.named_parameters()}
    expected = {"predictor.conv5_mask.weight", "predictor.conv5_mask.bias"}
    expected |= {"predictor.mask_fcn_logits.weight", "predictor.mask_fcn_logits.bias"}
    for i in (1, 2):  # maskrcnn-benchmark's names: with GN, a Sequential(conv, norm)
        layer = f"feature_extractor.mask_fcn{i}"
        expected |= {f"{layer}.0.weight", f"{layer}.1.weight", f"{layer}.1.bias"} if use_gn else {
            f"{layer}.weight",
            f"{layer}.bias",
        }
    assert names == expected
    assert head.feature_extractor.out_channels == 8
    assert head.predictor.conv5_mask.out_channels == 8 and head.predictor.mask_fcn_logits.out_channels == NUM_CLASSES


@pytest.mark.parametrize("dilation, use_gn", [(1, False), (2, False), (1, True)])
def test_conv_stack_matches_torchvision(dilation, use_gn):
    torch.manual_seed(0)
    cfg = fpn_cfg(use_gn)
    cfg.MODEL.ROI_MASK_HEAD.DILATION = dilation
    ours = build_roi_mask_head(cfg, 4).feature_extractor
    theirs = MaskRCNNHeads(4, [8, 8], dilation, norm_layer=(lambda c: nn.GroupNorm(4, c)) if use_gn else None)
    for i in (0, 1):
        # torchvision's block i is Sequential(conv, [norm,] relu) under the index i.
        theirs[i].load_state_dict(_as_torchvision_block(getattr(ours, f"mask_fcn{i + 1}").state_dict(), use_gn))
    x = torch.randn(3, 4, 7, 7)
    assert_close(ours.apply_convs(x), theirs(x))


def _as_torchvision_block(state: dict, use_gn: bool) -> dict:
    """Our mask_fcn{i} state dict -> the keys of torchvision's Conv2dNormActivation."""
    return state if use_gn else {f"0.{k}": v for k, v in state.items()}


def test_predictor_matches_torchvision():
    torch.manual_seed(0)
    ours = MaskRCNNC4Predictor(6, 8, NUM_CLASSES)
    assert all(p.abs().sum() == 0 for n, p in ours.named_parameters() if n.endswith("bias"))
    theirs = MaskRCNNPredictor(6, 8, NUM_CLASSES)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 6, 5, 5)
    assert ours(x).shape == (3, NUM_CLASSES, 10, 10)
    assert_close(ours(x), theirs(x))


@needs_ops
def test_train_step_uses_positives_only():
    torch.manual_seed(0)
    head = build_roi_mask_head(fpn_cfg(), 4).train()
    features, proposals, targets = inputs()
    x, result, losses = head(features, proposals, targets)
    assert x.shape == (3, 8, 7, 7)  # the 3 positives of image 0, none in image 1
    assert result == proposals  # the proposals come back unchanged
    positives = [p[p.get_field("labels") > 0] for p in proposals]
    expected = mask_rcnn_loss(head.predictor(x), positives, targets)
    assert set(losses) == {"loss_mask"} and torch.isfinite(losses["loss_mask"])
    assert_close(losses["loss_mask"], expected)
    losses["loss_mask"].backward()
    assert all(p.grad is not None for p in head.parameters())


@needs_ops
def test_train_step_reuses_box_features():
    head = build_roi_mask_head(fpn_cfg(), 4).train()
    features, proposals, targets = inputs()
    box_features = torch.randn(8, 8, 7, 7)  # one row per proposal of both images
    x, _, losses = head(features, proposals, targets, box_features=box_features)
    assert_close(x, box_features[torch.tensor([0, 2, 3])])
    assert torch.isfinite(losses["loss_mask"])


@needs_ops
def test_train_step_without_positives():
    head = build_roi_mask_head(fpn_cfg(), 4).train()
    features, proposals, targets = inputs()
    x, _, losses = head(features, proposals[1:], targets[1:])
    assert x.shape[0] == 0 and losses["loss_mask"].item() == 0
    losses["loss_mask"].backward()


@needs_ops
def test_eval_step_adds_class_probabilities():
    head = build_roi_mask_head(fpn_cfg(), 4).eval()
    features, proposals, _ = inputs()
    detections = [p.copy_with_fields("labels") for p in proposals]
    detections[1] = detections[1][torch.tensor([], dtype=torch.int64)]  # an image without detections
    with torch.no_grad():
        x, result, losses = head(features, detections)
        logits = head.predictor(x)
    assert losses == {} and len(result) == 2
    mask = result[0].get_field("mask")
    labels = detections[0].get_field("labels")
    assert mask.shape == (5, 1, 14, 14)
    assert_close(mask[:, 0], logits[torch.arange(5), labels].sigmoid())
    assert result[1].get_field("mask").shape == (0, 1, 14, 14)
    assert not detections[0].has_field("mask")  # the input is not modified


@needs_ops
def test_eval_step_pastes_masks_when_asked():
    cfg = fpn_cfg()
    cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS = True
    head = build_roi_mask_head(cfg, 4).eval()
    features, proposals, _ = inputs()
    with torch.no_grad():
        _, result, _ = head(features, [p.copy_with_fields("labels") for p in proposals])
    pasted = result[0].get_field("mask")
    assert pasted.shape == (5, 1, 48, 64) and pasted.dtype == torch.bool


@needs_ops
def test_c4_head():
    head = build_roi_mask_head(c4_cfg(), 64)
    assert isinstance(head.feature_extractor.head, nn.Module) and head.feature_extractor.out_channels == 128
    features, proposals, targets = inputs()
    features = [torch.randn(2, 64, 3, 4)]  # one stride-16 map
    head.train()
    x, _, losses = head(features, proposals, targets)
    assert x.shape == (3, 128, 3, 3) and torch.isfinite(losses["loss_mask"])


@needs_ops
def test_aligned_masks_reach_the_targets_and_the_pasting():
    cfg = fpn_cfg()
    cfg.MODEL.ROI_MASK_HEAD.ALIGNED_MASKS = True
    cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS = True
    torch.manual_seed(0)
    head = build_roi_mask_head(cfg, 4).train()
    assert head.aligned and head.post_processor.aligned and head.post_processor.masker.aligned
    features, proposals, targets = inputs()
    x, _, losses = head(features, proposals, targets)
    positives = [p[p.get_field("labels") > 0] for p in proposals]
    logits = head.predictor(x)
    assert_close(losses["loss_mask"], mask_rcnn_loss(logits, positives, targets, aligned=True))
    # The polygons' edges make the two pixel models' targets differ, hence the losses.
    assert (losses["loss_mask"] - mask_rcnn_loss(logits, positives, targets)).abs() > 1e-4
    assert not build_roi_mask_head(fpn_cfg(), 4).post_processor.aligned  # torchvision's by default
