"""detbench.modeling.registry as maskrcnn-benchmark code uses it: dict access, a user's class
registered from the user's own file and selected from YAML, the builders' maskrcnn-benchmark names."""

from __future__ import annotations

import textwrap

import pytest
import torch

from detbench.config import load_config
from detbench.modeling import registry
from detbench.modeling.detector import build_detection_model
from detbench.utils import env

NAMES = ["BACKBONES", "RPN_HEADS", "ROI_BOX_FEATURE_EXTRACTORS", "ROI_BOX_PREDICTOR", "ROI_MASK_FEATURE_EXTRACTORS",
         "ROI_MASK_PREDICTOR", "ROI_KEYPOINT_FEATURE_EXTRACTORS", "ROI_KEYPOINT_PREDICTOR"]

USER_FILE = """
    from torch import nn
    from detbench.modeling import registry

    @registry.ROI_BOX_PREDICTOR.register("UserPredictor")
    class UserPredictor(nn.Module):
        # maskrcnn-benchmark's contract: (cfg, in_channels); forward -> (class logits, box deltas)
        def __init__(self, cfg, in_channels):
            super().__init__()
            num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
            self.cls_score = nn.Linear(in_channels, num_classes)
            self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return self.cls_score(x), self.bbox_pred(x)

    class UserBody(nn.Module):
        out_channels = 16  # all a maskrcnn-benchmark backbone reports

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, stride=16, padding=1)

        def forward(self, x):
            return [self.conv(x)]  # one feature map per level, as maskrcnn-benchmark's bodies

    def user_backbone(cfg):
        return UserBody()

    registry.BACKBONES.register("UserBackbone", user_backbone)
"""


@pytest.mark.parametrize("name", NAMES)
def test_registries_read_as_dicts(name):
    reg = getattr(registry, name)
    assert len(reg) == len(list(reg.keys())) == len(reg.items()) > 0
    for key, builder in reg.items():
        assert reg[key] is builder and key in reg
    with pytest.raises(KeyError, match=f"{name} has no entry 'nope'"):
        reg["nope"]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    path = tmp_path / "my_parts.py"
    path.write_text(textwrap.dedent(USER_FILE))
    monkeypatch.setenv("DETBENCH_ENV_MODULE", str(path))
    yield env.setup_environment()
    # Registries are process-wide: leave them as the other tests expect them.
    registry.ROI_BOX_PREDICTOR._table.pop("UserPredictor", None)
    registry.BACKBONES._table.pop("UserBackbone", None)
    env._done.pop(str(path), None)


def test_user_classes_are_selectable_from_yaml(user_module, tmp_path):
    f = tmp_path / "user.yaml"
    f.write_text(textwrap.dedent("""
        MODEL:
          DEVICE: cpu
          BACKBONE: {CONV_BODY: "UserBackbone"}
          ROI_BOX_HEAD:
            PREDICTOR: "UserPredictor"
            NUM_CLASSES: 3
            FEATURE_EXTRACTOR: "FPN2MLPFeatureExtractor"
            POOLER_SCALES: (0.0625,)
            MLP_HEAD_DIM: 32
    """))
    cfg = load_config(f)
    model = build_detection_model(cfg).eval()
    assert type(model.roi_heads.box.predictor).__name__ == "UserPredictor"
    assert type(model.backbone).__name__ == "UserBody"
    with torch.no_grad():
        detections = model([torch.rand(3, 64, 80)])
    assert model.roi_heads.box.predictor.calls == 1 and len(detections) == 1


def test_builders_under_maskrcnn_benchmark_names():
    from detbench.modeling.backbone import build_backbone
    from detbench.modeling.poolers import make_pooler
    from detbench.modeling.roi_heads.box_head.roi_box_feature_extractors import make_roi_box_feature_extractor
    from detbench.modeling.roi_heads.box_head.roi_box_predictors import make_roi_box_predictor
    from detbench.modeling.roi_heads.keypoint_head.roi_keypoint_feature_extractors import (
        make_roi_keypoint_feature_extractor,
    )
    from detbench.modeling.roi_heads.keypoint_head.roi_keypoint_predictors import make_roi_keypoint_predictor
    from detbench.modeling.roi_heads.mask_head.roi_mask_feature_extractors import make_roi_mask_feature_extractor
    from detbench.modeling.roi_heads.mask_head.roi_mask_predictors import make_roi_mask_predictor
    from detbench.modeling.rpn.anchor_generator import make_anchor_generator

    cfg = load_config("configs/e2e_keypoint_rcnn_R_50_FPN_1x.yaml", ["MODEL.DEVICE", "cpu"])
    assert build_backbone(cfg).out_channels == 256
    assert make_roi_box_feature_extractor(cfg, 256).out_channels == cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM
    cls, _ = make_roi_box_predictor(cfg, 1024)(torch.zeros(2, 1024))
    assert cls.shape == (2, cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES)
    assert make_roi_keypoint_feature_extractor(cfg, 256).out_channels == 512
    assert make_roi_keypoint_predictor(cfg, 512) is not None
    mask_cfg = load_config("configs/e2e_mask_rcnn_R_50_FPN_1x.yaml", ["MODEL.DEVICE", "cpu"])
    assert make_roi_mask_feature_extractor(mask_cfg, 256).out_channels == 256
    assert make_roi_mask_predictor(mask_cfg, 256) is not None
    assert len(make_anchor_generator(cfg).num_anchors_per_location()) == 5
    assert make_pooler(cfg, "ROI_BOX_HEAD") is not None
