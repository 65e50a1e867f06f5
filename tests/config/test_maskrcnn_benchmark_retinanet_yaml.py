"""maskrcnn-benchmark's six configs/retinanet/*.yaml load unchanged, build RetinaNet and train.

The files are assembled below from their common parts; the keys and values of each are those
of the published file (its comments aside). Their MODEL.WEIGHT names a "catalog://" file that
detbench cannot fetch, so the training step starts from random weights.
The R-101 and X-101 files are only loaded and checked (to keep the suite fast: their bodies are
the R-50 ones with more blocks, which tests/modeling/backbone builds; the X-101 file's FPN is 1024
wide, see below).
"""

from __future__ import annotations

import math

import pytest
import torch

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.modeling.rpn.retinanet import RetinaNetModule
from detbench.structures.bounding_box import BoxList

HEAD = """MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  WEIGHT: "{weight}"
  RPN_ONLY: True
  RETINANET_ON: True
  BACKBONE:
    CONV_BODY: "{body}"
{channels}"""
OUT_CHANNELS = "    OUT_CHANNELS: 256\n"  # the older key some of the files use
BACKBONE_OUT_CHANNELS = "  RESNETS:\n    BACKBONE_OUT_CHANNELS: 256\n"
RCNN_PART = """  RPN:
    USE_FPN: True
    FG_IOU_THRESHOLD: 0.5
    BG_IOU_THRESHOLD: 0.4
    ANCHOR_STRIDE: (4, 8, 16, 32, 64)
    PRE_NMS_TOP_N_TRAIN: 2000
    PRE_NMS_TOP_N_TEST: 1000
    POST_NMS_TOP_N_TEST: 1000
    FPN_POST_NMS_TOP_N_TEST: 1000
  ROI_HEADS:
    USE_FPN: True
    BATCH_SIZE_PER_IMAGE: 256
  ROI_BOX_HEAD:
    POOLER_RESOLUTION: 7
    POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
    POOLER_SAMPLING_RATIO: 2
    FEATURE_EXTRACTOR: "FPN2MLPFeatureExtractor"
    PREDICTOR: "FPNPredictor"
{resnext}  RETINANET:
    SCALES_PER_OCTAVE: 3
    STRADDLE_THRESH: -1
{use_c5}    FG_IOU_THRESHOLD: 0.5
    BG_IOU_THRESHOLD: 0.4
"""
RESNEXT = "  RESNETS:\n    STRIDE_IN_1X1: False\n    NUM_GROUPS: 32\n    WIDTH_PER_GROUP: 8\n"
TAIL = """DATASETS:
  TRAIN: {train}
  TEST: {test}
INPUT:
  MIN_SIZE_TRAIN: ({min_train}, )
  MAX_SIZE_TRAIN: {max_train}
  MIN_SIZE_TEST: 800
  MAX_SIZE_TEST: {max_test}
DATALOADER:
  SIZE_DIVISIBILITY: 32
SOLVER:
  # Assume 4 gpus
  BASE_LR: {lr}
  WEIGHT_DECAY: 0.0001
  STEPS: {steps}
  MAX_ITER: {max_iter}
  IMS_PER_BATCH: {ims}
"""
COCO14 = dict(train='("coco_2014_train", "coco_2014_valminusminival")', test='("coco_2014_minival",)')
COCO17 = dict(train='("coco_2017_train",)', test='("coco_2017_val",)')
FULL = dict(min_train=800, max_train=1333, max_test=1333, lr=0.005, steps="(120000, 160000)", max_iter=180000, ims=8)


def _file(weight, body, channels, use_c5, datasets, resnext="", **solver):
    tail = TAIL.format(**datasets, **{**FULL, **solver})
    return (HEAD.format(weight=f"catalog://ImageNetPretrained/{weight}", body=body, channels=channels)
            + RCNN_PART.format(resnext=resnext, use_c5="    USE_C5: False\n" if not use_c5 else "") + tail)


FILES = {
    "retinanet_R-50-FPN_1x": _file("MSRA/R-50", "R-50-FPN-RETINANET", OUT_CHANNELS, True, COCO17),
    "retinanet_R-50-FPN_P5_1x": _file("MSRA/R-50", "R-50-FPN-RETINANET", BACKBONE_OUT_CHANNELS, False, COCO14),
    "retinanet_R-50-FPN_1x_quick": _file("MSRA/R-50", "R-50-FPN-RETINANET", BACKBONE_OUT_CHANNELS, True,
                                         dict(train='("coco_2014_minival",)', test='("coco_2014_minival",)'),
                                         min_train=600, max_train=1000, max_test=1000, steps="(3500,)",
                                         max_iter=4000, ims=4),
    "retinanet_R-101-FPN_1x": _file("MSRA/R-101", "R-101-FPN-RETINANET", BACKBONE_OUT_CHANNELS, True, COCO14),
    "retinanet_R-101-FPN_P5_1x": _file("MSRA/R-101", "R-101-FPN-RETINANET", OUT_CHANNELS, False, COCO17),
    "retinanet_X_101_32x8d_FPN_1x": _file("FAIR/20171220/X-101-32x8d", "R-101-FPN-RETINANET",
                                          BACKBONE_OUT_CHANNELS, True, COCO14, resnext=RESNEXT, lr=0.0025,
                                          steps="(240000, 320000)", max_iter=360000, ims=4),
}

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


@pytest.mark.parametrize("name", list(FILES))
def test_loads_unchanged_builds_and_trains(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(FILES[name])
    cfg = load_config(path, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", ""])
    assert cfg.MODEL.RETINANET_ON and cfg.MODEL.RETINANET.STRADDLE_THRESH == -1
    if "X_101" in name:
        # The file has two RESNETS sections; YAML keeps the second, which drops
        # BACKBONE_OUT_CHANNELS 256 (so its FPN is 1024 wide, in maskrcnn-benchmark as here).
        r = cfg.MODEL.RESNETS
        assert (r.NUM_GROUPS, r.WIDTH_PER_GROUP, r.BACKBONE_OUT_CHANNELS) == (32, 8, 1024)
    if "101" in name:
        assert cfg.MODEL.BACKBONE.CONV_BODY == "R-101-FPN-RETINANET"
        assert cfg.MODEL.RETINANET.USE_C5 == ("USE_C5: False" not in FILES[name])
        return
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    assert isinstance(model.rpn, RetinaNetModule) and model.roi_heads is None
    assert model.backbone.out_channels == 256
    assert model.backbone.strides == (8, 16, 32, 64, 128)
    assert model.backbone.fpn.top_blocks.use_c5 == ("USE_C5: False" not in FILES[name])
    target = BoxList(torch.tensor([[8.0, 8.0, 40.0, 56.0]]), (64, 64))
    target.add_field("labels", torch.tensor([3]))
    model.train()
    losses = model(torch.randn(1, 3, 64, 64), [target])
    assert set(losses) == {"loss_retina_cls", "loss_retina_reg"}
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
