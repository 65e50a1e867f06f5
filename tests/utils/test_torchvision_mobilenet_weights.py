"""torchvision MobileNet weights: kinds, one-to-one key conversion into detbench's MobileNet
configs, torchvision:// names, and loading a torchvision file (local path or hub cache)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from test_torchvision_weights import _detbench_keys, _meta_state_dict, hub  # noqa: F401  (tests/utils)
from torch.testing import assert_close
from torchvision import models
from torchvision.models import detection
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.utils import torchvision_weights as tv
from detbench.utils.checkpoint import Checkpointer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FPN = "torchvision/fasterrcnn_mobilenet_v3_large_fpn.yaml"
TUTORIAL = "tutorial/faster_rcnn_mobilenet_v2.yaml"


def _coco_detector() -> FasterRCNN:
    """fasterrcnn_mobilenet_v3_large_fpn as built for its COCO weights (frozen batch norm)."""
    body = _mobilenet_extractor(models.mobilenet_v3_large(norm_layer=FrozenBatchNorm2d), True, 3)
    return FasterRCNN(body, 91, rpn_anchor_generator=AnchorGenerator(((32, 64, 128, 256, 512),) * 3,
                                                                     ((0.5, 1.0, 2.0),) * 3))


def _tutorial_detector() -> FasterRCNN:
    features = models.mobilenet_v2().features
    features.out_channels = 1280
    return FasterRCNN(features, 2, rpn_anchor_generator=AnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),)),
                      box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2))


def _shapes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in state_dict.items()}


@pytest.mark.parametrize("build, config, name", [
    (_coco_detector, FPN, "fasterrcnn_mobilenet_v3_large_fpn"),
    (_tutorial_detector, TUTORIAL, "fasterrcnn_mobilenet_v2"),
])
def test_detector_keys_map_one_to_one(build, config, name):
    theirs = _meta_state_dict(build)
    assert tv.detect_kind(theirs) == "fasterrcnn_mobilenet"
    assert tv.describe(theirs) == name
    converted, unknown = tv.convert(theirs)
    assert unknown == []
    assert _shapes(converted) == _detbench_keys(config)  # every tensor filled, counters included
    assert len(converted) == len(theirs)


def test_torchvision_s_own_builder_has_the_same_keys():
    """The published builder (trained batch norm without weights) names its tensors alike."""
    theirs = _meta_state_dict(lambda: detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None))
    converted, unknown = tv.convert(theirs)
    ours = _detbench_keys(FPN, "MODEL.MOBILENET.NORM", "BatchNorm2d")
    assert unknown == [] and _shapes(converted) == ours


@pytest.mark.parametrize("builder, config, name, opts", [
    (models.mobilenet_v2, TUTORIAL, "mobilenet_v2", ()),
    (models.mobilenet_v3_large, FPN, "mobilenet_v3_large", ("MODEL.MOBILENET.NORM", "BatchNorm2d")),
])
def test_imagenet_mobilenets_fill_the_body(builder, config, name, opts):
    theirs = _meta_state_dict(builder)
    assert tv.detect_kind(theirs) == name and tv.describe(theirs) == f"{name} (ImageNet)"
    converted, unknown = tv.convert(theirs)
    assert unknown == [] and not any("classifier" in k for k in converted)
    body = {k: v for k, v in _detbench_keys(config, *opts).items() if k.startswith("backbone.body.")}
    assert _shapes(converted) == body


def test_other_mobilenets_are_not_taken_for_these():
    small = _meta_state_dict(models.mobilenet_v3_small)
    assert tv.detect_kind(small) is None


def test_mobilenet_names_resolve_to_torchvision_s_urls():
    expected = {
        "mobilenet_v2": models.MobileNet_V2_Weights.IMAGENET1K_V1,
        "mobilenet_v3_large": models.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        "fasterrcnn_mobilenet_v3_large_fpn_coco": detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
        "fasterrcnn_mobilenet_v3_large_320_fpn_coco":
            detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
    }
    for name, weights in expected.items():
        assert tv.url_of(f"torchvision://{name}") == weights.url
    assert load_config(CONFIGS / FPN).MODEL.WEIGHT == "torchvision://fasterrcnn_mobilenet_v3_large_fpn_coco"
    assert load_config(CONFIGS / "torchvision/fasterrcnn_mobilenet_v3_large_320_fpn.yaml").MODEL.WEIGHT == \
        "torchvision://fasterrcnn_mobilenet_v3_large_320_fpn_coco"
    assert load_config(CONFIGS / TUTORIAL).MODEL.WEIGHT == "torchvision://mobilenet_v2"


def test_imagenet_file_given_as_model_weight_loads_into_the_fpn_body(tmp_path, caplog):
    torch.manual_seed(0)
    classifier = models.mobilenet_v3_large()
    torch.save(classifier.state_dict(), tmp_path / "mnv3.pth")
    cfg = load_config(CONFIGS / FPN, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", str(tmp_path / "mnv3.pth")])
    model = build_detection_model(cfg)
    with caplog.at_level(logging.INFO):
        Checkpointer(model).load(cfg.MODEL.WEIGHT)
    ours, theirs = model.state_dict(), classifier.state_dict()
    for key in ("features.0.0.weight", "features.4.block.2.fc1.bias", "features.16.1.running_var"):
        assert_close(ours[f"backbone.body.{key}"], theirs[key])
    assert "torchvision mobilenet_v3_large (ImageNet) weights" in caplog.text


def test_torchvision_name_loads_from_the_hub_cache(hub, caplog):  # noqa: F811  (the fixture)
    """torchvision://mobilenet_v2 with the file already cached: into the tutorial's trained batch norm."""
    torch.manual_seed(0)
    classifier = models.mobilenet_v2()
    with torch.no_grad():
        classifier.features[18][1].running_mean.normal_()
    classifier.features[18][1].num_batches_tracked.fill_(7)
    torch.save(classifier.state_dict(), hub / tv.url_of("mobilenet_v2").rsplit("/", 1)[1])
    cfg = load_config(CONFIGS / TUTORIAL, ["MODEL.DEVICE", "cpu"])
    model = build_detection_model(cfg)
    with caplog.at_level(logging.INFO):
        Checkpointer(model).load(cfg.MODEL.WEIGHT)
    state = model.state_dict()
    assert_close(state["backbone.body.features.18.1.running_mean"], classifier.features[18][1].running_mean)
    assert state["backbone.body.features.18.1.num_batches_tracked"] == 7
    missing = [r.getMessage() for r in caplog.records if "not in the checkpoint" in r.getMessage()]
    assert missing and not any("backbone.body." in m for m in missing)  # only the RPN and box head
