"""Every entry of every modeling registry builds; a new entry without a case here fails."""

from __future__ import annotations

import pytest
import torch

from detbench.config import load_config
from detbench.modeling.backbone.backbone import BACKBONES
from detbench.modeling.backbone.resnet import BOTTLENECKS, STEMS
from detbench.modeling.detector.detectors import META_ARCHITECTURES
from detbench.modeling.roi_heads.box_head.roi_box_feature_extractors import ROI_BOX_FEATURE_EXTRACTORS
from detbench.modeling.roi_heads.box_head.roi_box_predictors import ROI_BOX_PREDICTOR
from detbench.modeling.roi_heads.keypoint_head.roi_keypoint_feature_extractors import (
    ROI_KEYPOINT_FEATURE_EXTRACTORS,
)
from detbench.modeling.roi_heads.keypoint_head.roi_keypoint_predictors import ROI_KEYPOINT_PREDICTOR
from detbench.modeling.roi_heads.mask_head.roi_mask_feature_extractors import ROI_MASK_FEATURE_EXTRACTORS
from detbench.modeling.roi_heads.mask_head.roi_mask_predictors import ROI_MASK_PREDICTOR
from detbench.modeling.rpn.rpn import RPN_HEADS

FPN_SCALES = ["POOLER_SCALES", "(0.25, 0.125, 0.0625, 0.03125)"]
# registry -> {name: (builder arguments after cfg, config overrides)}; in_channels as the models use them.
CASES = {
    RPN_HEADS: {"SingleConvRPNHead": ((256, 3), [])},
    ROI_BOX_FEATURE_EXTRACTORS: {
        "ResNet50Conv5ROIFeatureExtractor": ((1024,), []),
        "FPN2MLPFeatureExtractor": ((256,), ["MODEL.ROI_BOX_HEAD." + FPN_SCALES[0], FPN_SCALES[1]]),
        "FPNXconv1fcFeatureExtractor": ((256,), ["MODEL.ROI_BOX_HEAD." + FPN_SCALES[0], FPN_SCALES[1]]),
    },
    ROI_BOX_PREDICTOR: {"FastRCNNPredictor": ((2048,), []), "FPNPredictor": ((1024,), [])},
    ROI_MASK_FEATURE_EXTRACTORS: {
        "ResNet50Conv5ROIFeatureExtractor": ((1024,), []),
        "MaskRCNNFPNFeatureExtractor": ((256,), ["MODEL.ROI_MASK_HEAD." + FPN_SCALES[0], FPN_SCALES[1]]),
    },
    ROI_MASK_PREDICTOR: {"MaskRCNNC4Predictor": ((256,), [])},
    ROI_KEYPOINT_FEATURE_EXTRACTORS: {
        "KeypointRCNNFeatureExtractor": ((256,), ["MODEL.ROI_KEYPOINT_HEAD." + FPN_SCALES[0], FPN_SCALES[1]]),
    },
    ROI_KEYPOINT_PREDICTOR: {"KeypointRCNNPredictor": ((512,), [])},
    STEMS: {name: ((), []) for name in ("StemWithFixedBatchNorm", "StemWithGN")},
    BOTTLENECKS: {
        **{name: ((), []) for name in ("BottleneckWithFixedBatchNorm", "BottleneckWithGN")},
        # Basic blocks (ResNet-18/34) have no bottleneck: res2 has WIDTH_PER_GROUP = 64 channels.
        **{name: ((), ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64"])
           for name in ("BasicBlockWithFixedBatchNorm", "BasicBlockWithGN")},
    },
    META_ARCHITECTURES: {"GeneralizedRCNN": ((), ["MODEL.DEVICE", "cpu"])},
}
PARAMS = [(reg, name, *case) for reg, table in CASES.items() for name, case in table.items()]


@pytest.mark.parametrize("registry", list(CASES), ids=lambda r: r.name)
def test_every_entry_has_a_case(registry):
    assert set(registry) == set(CASES[registry]), f"{registry.name}: add the new entries to CASES"


def test_backbones_are_covered_elsewhere():
    # tests/modeling/backbone/test_backbone.py builds and runs every BACKBONES entry.
    assert {"R-50-C4", "R-50-C5", "R-101-C4", "R-101-C5", "R-50-FPN", "R-101-FPN", "R-152-FPN"} <= set(BACKBONES)
    assert {f"R-{depth}-{kind}" for depth in (18, 34) for kind in ("C4", "C5", "FPN")} <= set(BACKBONES)


@pytest.mark.parametrize(
    "registry, name, args, opts", PARAMS, ids=[f"{r.name}:{n}" for r, n, *_ in PARAMS]
)
def test_entry_builds(registry, name, args, opts):
    torch.manual_seed(0)
    built = registry.get(name)(load_config(None, opts), *args)
    assert built is not None
    if isinstance(built, torch.nn.Module):
        assert sum(p.numel() for p in built.parameters()) > 0 or registry in (STEMS, BOTTLENECKS)
