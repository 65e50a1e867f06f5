"""MobileNet bodies: stages, strides, channels and freezing as torchvision's _mobilenet_extractor,
bad settings named, and the tutorial config trains from its YAML alone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large
from torchvision.models.detection.backbone_utils import _mobilenet_extractor

from detbench.config import load_config
from detbench.config.defaults import get_cfg
from detbench.layers.norm import FrozenBatchNorm2d
from detbench.modeling.backbone import build_backbone
from detbench.modeling.backbone.mobilenet import MobileNetBody, build_mobilenet_features, stage_ends
from detbench.modeling.detector import build_detection_model
from detbench.solver.build import make_optimizer
from detbench.structures.bounding_box import BoxList

TUTORIAL = Path(__file__).resolve().parents[3] / "configs" / "tutorial" / "faster_rcnn_mobilenet_v2.yaml"
TORCHVISION = {"MobileNetV2": mobilenet_v2, "MobileNetV3-Large": mobilenet_v3_large}

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _cfg(conv_body: str, **mobilenet):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.CONV_BODY = conv_body
    cfg.MODEL.BACKBONE.OUT_CHANNELS = 256
    cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 0
    for key, value in mobilenet.items():
        cfg.MODEL.MOBILENET[key] = value
    return cfg


@pytest.mark.parametrize("network, ends, last_two", [
    ("MobileNetV2", [0, 2, 4, 7, 14, 18], (160, 1280)),
    ("MobileNetV3-Large", [0, 2, 4, 7, 13, 16], (160, 960)),
])
def test_stages_and_fpn_inputs_are_torchvision_s(network, ends, last_two):
    """Hand-read from torchvision's tables: the stride-2 blocks, and the FPN's input widths."""
    features = build_mobilenet_features(network, "BatchNorm2d")
    assert stage_ends(features) == ends
    reference = _mobilenet_extractor(TORCHVISION[network](), True, 6)
    assert tuple(reference.fpn.inner_blocks[i][0].in_channels for i in range(2)) == last_two
    backbone = build_backbone(_cfg(f"{network}-FPN"))
    assert backbone.body.out_channels == last_two
    assert (backbone.out_channels, backbone.strides) == (256, (32, 32, 64))
    # Every stage's stride, from the convolutions: 2, 4, 8, 16, 32, 32.
    body = MobileNetBody(features, range(6))
    assert body.strides == (2, 4, 8, 16, 32, 32)
    with torch.no_grad():
        outputs = body(torch.randn(1, 3, 70, 90))
    assert [tuple(o.shape[-2:]) for o in outputs] == [(math.ceil(70 / s), math.ceil(90 / s)) for s in body.strides]
    assert [o.shape[1] for o in outputs] == list(body.out_channels)


@pytest.mark.parametrize("network", list(TORCHVISION))
@pytest.mark.parametrize("freeze_at", range(7))
def test_freezing_matches_torchvision_trainable_layers(network, freeze_at):
    """FREEZE_CONV_BODY_AT = 6 - trainable_layers freezes the same parameters as torchvision."""
    reference = _mobilenet_extractor(TORCHVISION[network](), True, 6 - freeze_at)
    theirs = {k.removeprefix("body.") for k, p in reference.named_parameters() if not p.requires_grad}
    body = MobileNetBody(build_mobilenet_features(network, "BatchNorm2d"), (4, 5), freeze_at)
    ours = {k.removeprefix("features.") for k, p in body.named_parameters() if not p.requires_grad}
    assert ours == theirs
    assert (len(ours) == 0) == (freeze_at == 0)


def test_frozen_batch_norm_is_detbench_s_and_trained_is_torchvision_s():
    frozen = build_mobilenet_features("MobileNetV3-Large", "FrozenBatchNorm2d")
    assert all(not isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert {m.eps for m in frozen.modules() if isinstance(m, FrozenBatchNorm2d)} == {1e-5}
    trained = build_mobilenet_features("MobileNetV3-Large", "BatchNorm2d")
    assert {(m.eps, m.momentum) for m in trained.modules() if isinstance(m, nn.BatchNorm2d)} == {(1e-3, 0.01)}


def test_returned_stages_choose_the_fpn_inputs():
    backbone = build_backbone(_cfg("MobileNetV3-Large-FPN", RETURNED_STAGES=(2, 3, 5)))
    assert backbone.body.out_channels == (40, 80, 960)
    assert backbone.strides == (8, 16, 32, 64)
    # Modules after the last returned stage are dropped, as torchvision's IntermediateLayerGetter does.
    short = build_backbone(_cfg("MobileNetV2", RETURNED_STAGES=(4,)))
    assert len(short.body.features) == 15 and short.out_channels == 160


@pytest.mark.parametrize("conv_body, key, value, message", [
    ("MobileNetV2-FPN", "RETURNED_STAGES", (5, 4), "must increase within"),
    ("MobileNetV2-FPN", "RETURNED_STAGES", (4, 6), "must increase within"),
    ("MobileNetV2", "RETURNED_STAGES", (4, 5), "needs an FPN"),
    ("MobileNetV2", "NORM", "SyncBatchNorm", "MODEL.MOBILENET.NORM must be one of"),
])
def test_bad_settings_are_named(conv_body, key, value, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(_cfg(conv_body, **{key: value}))


def test_tutorial_config_trains_from_yaml_alone():
    """Two SGD steps of configs/tutorial with random weights on a tiny image: finite losses,
    every trainable parameter moves, the trained batch norm updates its statistics."""
    torch.manual_seed(0)
    cfg = load_config(TUTORIAL, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", "MODEL.RPN.PRE_NMS_TOP_N_TRAIN", "300",
                                 "MODEL.RPN.POST_NMS_TOP_N_TRAIN", "100", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32"])
    assert cfg.DATASETS.TRAIN == ("penn_fudan_train",)
    model = build_detection_model(cfg).train()
    assert model.backbone.out_channels == 1280 and model.rpn.anchor_generator.num_anchors_per_location() == [15]
    assert model.roi_heads["box"].feature_extractor.pooler.output_size == (7, 7)
    optimizer = make_optimizer(cfg, model)
    target = BoxList(torch.tensor([[10.0, 8.0, 60.0, 90.0]]), (96, 128))
    target.add_field("labels", torch.tensor([1]))
    images = torch.randn(1, 3, 128, 96)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    bn = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    mean_before = bn.running_mean.clone()
    for _ in range(2):
        losses = model(images, [target])
        assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
        assert all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen in the tutorial
    assert not torch.equal(bn.running_mean, mean_before)
    unchanged = [k for k, p in model.named_parameters() if torch.equal(p, before[k])]
    assert unchanged == []
