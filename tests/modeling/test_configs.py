"""Every YAML in configs/ builds, trains one step and evaluates one step on tiny inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.structures.bounding_box import BoxList
from detbench.structures.keypoint import PersonKeypoints
from detbench.structures.segmentation_mask import SegmentationMask

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if not p.name.startswith("Base-"))
# Small sizes keep the suite fast; they do not change which code paths run.
TINY = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "MODEL.RPN.PRE_NMS_TOP_N_TRAIN", "300", "MODEL.RPN.POST_NMS_TOP_N_TRAIN", "100",
        "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN", "100", "MODEL.RPN.PRE_NMS_TOP_N_TEST", "300",
        "MODEL.RPN.POST_NMS_TOP_N_TEST", "50", "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "50",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.ROI_HEADS.SCORE_THRESH", "0.0",
        "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "10"]
H, W = 64, 96


def _targets(cfg) -> list[BoxList]:
    """Image 0 has two objects (mask, keypoints); image 1 has no ground truth at all."""
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [50.0, 10.0, 90.0, 60.0]])
    full = BoxList(boxes, (W, H))
    classes = cfg.MODEL.RETINANET.NUM_CLASSES if cfg.MODEL.RETINANET_ON else cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    full.add_field("labels", torch.tensor([1, classes - 1]))
    polygons = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes.tolist()]
    full.add_field("masks", SegmentationMask(polygons, (W, H)))
    g = torch.Generator().manual_seed(0)
    xy = boxes[:, None, :2] + torch.rand(2, 17, 2, generator=g) * (boxes[:, None, 2:] - boxes[:, None, :2])
    full.add_field("keypoints", PersonKeypoints(torch.cat([xy, torch.full((2, 17, 1), 2.0)], dim=2), (W, H)))
    empty = BoxList(torch.zeros(0, 4), (W, H))
    empty.add_field("labels", torch.zeros(0, dtype=torch.int64))
    empty.add_field("masks", SegmentationMask([], (W, H)))
    empty.add_field("keypoints", PersonKeypoints(torch.zeros(0, 17, 3), (W, H)))
    return [full, empty]


def _frozen_prefixes(cfg) -> tuple[str, ...]:
    freeze_at = cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT
    parts = ["backbone.body.stem."] + [f"backbone.body.layer{i}." for i in range(1, 5)]
    return tuple(parts[:freeze_at])


pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


@pytest.mark.parametrize("config", CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in CONFIGS])
def test_config_builds_trains_and_evaluates(config):
    torch.manual_seed(0)
    cfg = load_config(config, TINY)
    model = build_detection_model(cfg)
    images = torch.randn(2, 3, H, W)

    model.train()
    losses = model(images, _targets(cfg))
    assert losses, "training returned no losses"
    for name, value in losses.items():
        assert value.dim() == 0 and math.isfinite(value.item()), f"{name} = {value}"
    sum(losses.values()).backward()
    frozen = _frozen_prefixes(cfg)
    for name, p in model.named_parameters():
        if name.startswith(frozen):
            assert not p.requires_grad, f"{name} should be frozen"
        elif p.requires_grad:
            assert p.grad is not None, f"no gradient reached {name}"
            assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"

    model.eval()
    with torch.no_grad():
        results = model(images)
    assert len(results) == 2
    for result in results:
        assert result.size == (W, H)
        if cfg.MODEL.RPN_ONLY and not cfg.MODEL.RETINANET_ON:
            assert result.has_field("objectness")
            continue
        assert result.has_field("scores") and result.has_field("labels")
        if cfg.MODEL.MASK_ON:
            side = cfg.MODEL.ROI_MASK_HEAD.RESOLUTION
            assert result.get_field("mask").shape == (len(result), 1, side, side)
        if cfg.MODEL.KEYPOINT_ON:
            assert result.get_field("keypoints_scores").shape == (len(result), 17)
