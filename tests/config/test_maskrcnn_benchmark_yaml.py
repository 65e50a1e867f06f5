"""maskrcnn-benchmark's own YAML files load unchanged and build a model.

The texts below are maskrcnn-benchmark's configs/e2e_mask_rcnn_R_50_FPN_1x.yaml,
gn_baselines/e2e_mask_rcnn_R_50_FPN_1x_gn.yaml and e2e_keypoint_rcnn_R_50_FPN_1x.yaml
(dataset names and weights as published; neither is loaded here).
"""

import pytest
import torch

from detbench.config import ConfigError, load_config
from detbench.modeling.detector import build_detection_model

FPN_MODEL = """
  RPN:
    USE_FPN: True
    ANCHOR_STRIDE: (4, 8, 16, 32, 64)
    PRE_NMS_TOP_N_TRAIN: 2000
    PRE_NMS_TOP_N_TEST: 1000
    POST_NMS_TOP_N_TEST: 1000
    FPN_POST_NMS_TOP_N_TEST: 1000
  ROI_HEADS:
    USE_FPN: True
"""
MASK_FPN = """
  ROI_BOX_HEAD:
    POOLER_RESOLUTION: 7
    POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
    POOLER_SAMPLING_RATIO: 2
    FEATURE_EXTRACTOR: "FPN2MLPFeatureExtractor"
    PREDICTOR: "FPNPredictor"
  ROI_MASK_HEAD:
    POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
    FEATURE_EXTRACTOR: "MaskRCNNFPNFeatureExtractor"
    PREDICTOR: "MaskRCNNC4Predictor"
    POOLER_RESOLUTION: 14
    POOLER_SAMPLING_RATIO: 2
    RESOLUTION: 28
    SHARE_BOX_FEATURE_EXTRACTOR: False
  MASK_ON: True
"""
TAIL = """
DATASETS:
  TRAIN: ("coco_2014_train", "coco_2014_valminusminival")
  TEST: ("coco_2014_minival",)
DATALOADER:
  SIZE_DIVISIBILITY: 32
SOLVER:
  BASE_LR: 0.02
  WEIGHT_DECAY: 0.0001
  STEPS: (60000, 80000)
  MAX_ITER: 90000
"""
MASK_R50_FPN = (
    """
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  WEIGHT: "catalog://ImageNetPretrained/MSRA/R-50"
  BACKBONE:
    CONV_BODY: "R-50-FPN"
  RESNETS:
    BACKBONE_OUT_CHANNELS: 256"""
    + FPN_MODEL + MASK_FPN + TAIL
)
MASK_R50_FPN_GN = (
    """
INPUT:
  MIN_SIZE_TRAIN: (800,)
  MAX_SIZE_TRAIN: 1333
  MIN_SIZE_TEST: 800
  MAX_SIZE_TEST: 1333
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  WEIGHT: "catalog://ImageNetPretrained/MSRA/R-50-GN"
  BACKBONE:
    CONV_BODY: "R-50-FPN"
  RESNETS: # use GN for backbone
    BACKBONE_OUT_CHANNELS: 256
    STRIDE_IN_1X1: False
    TRANS_FUNC: "BottleneckWithGN"
    STEM_FUNC: "StemWithGN"
  FPN:
    USE_GN: True # use GN for FPN"""
    + FPN_MODEL
    + """    BATCH_SIZE_PER_IMAGE: 512
    POSITIVE_FRACTION: 0.25
  ROI_BOX_HEAD:
    USE_GN: True # use GN for bbox head
    POOLER_RESOLUTION: 7
    POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
    POOLER_SAMPLING_RATIO: 2
    CONV_HEAD_DIM: 256
    NUM_STACKED_CONVS: 4
    FEATURE_EXTRACTOR: "FPNXconv1fcFeatureExtractor"
    PREDICTOR: "FPNPredictor"
  ROI_MASK_HEAD:
    USE_GN: True # use GN for mask head
    POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
    CONV_LAYERS: (256, 256, 256, 256)
    FEATURE_EXTRACTOR: "MaskRCNNFPNFeatureExtractor"
    PREDICTOR: "MaskRCNNC4Predictor"
    POOLER_RESOLUTION: 14
    POOLER_SAMPLING_RATIO: 2
    RESOLUTION: 28
    SHARE_BOX_FEATURE_EXTRACTOR: False
  MASK_ON: True"""
    + TAIL
    + "  IMS_PER_BATCH: 16\nTEST:\n  IMS_PER_BATCH: 8\n"
)
KEYPOINT_R50_FPN = (
    """
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  WEIGHT: "catalog://ImageNetPretrained/MSRA/R-50"
  BACKBONE:
    CONV_BODY: "R-50-FPN"
  RESNETS:
    BACKBONE_OUT_CHANNELS: 256"""
    + FPN_MODEL
    + """  ROI_BOX_HEAD:
    POOLER_RESOLUTION: 7
    POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
    POOLER_SAMPLING_RATIO: 2
    FEATURE_EXTRACTOR: "FPN2MLPFeatureExtractor"
    PREDICTOR: "FPNPredictor"
    NUM_CLASSES: 2
  ROI_KEYPOINT_HEAD:
    POOLER_RESOLUTION: 14
    POOLER_SAMPLING_RATIO: 2
    POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
    FEATURE_EXTRACTOR: "KeypointRCNNFeatureExtractor"
    PREDICTOR: "KeypointRCNNPredictor"
    RESOLUTION: 56
    SHARE_BOX_FEATURE_EXTRACTOR: False
  KEYPOINT_ON: True
DATASETS:
  TRAIN: ("keypoints_coco_2014_train", "keypoints_coco_2014_valminusminival",)
  TEST: ("keypoints_coco_2014_minival",)
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
DATALOADER:
  SIZE_DIVISIBILITY: 32
SOLVER:
  BASE_LR: 0.02
  WEIGHT_DECAY: 0.0001
  STEPS: (60000, 80000)
  MAX_ITER: 90000
"""
)


@pytest.mark.parametrize(
    "text, heads",
    [(MASK_R50_FPN, {"box", "mask"}), (MASK_R50_FPN_GN, {"box", "mask"}), (KEYPOINT_R50_FPN, {"box", "keypoint"})],
    ids=["mask_R_50_FPN", "mask_R_50_FPN_gn", "keypoint_R_50_FPN"],
)
def test_loads_unchanged_and_builds(tmp_path, text, heads):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    cfg = load_config(path, ["MODEL.DEVICE", "cpu"])
    model = build_detection_model(cfg)
    assert set(model.roi_heads.keys()) == heads
    assert model.backbone.out_channels == 256
    if cfg.MODEL.RESNETS.TRANS_FUNC == "BottleneckWithGN":
        assert any(isinstance(m, torch.nn.GroupNorm) for m in model.backbone.body.modules())


def test_unknown_registered_name_lists_nearest():
    # Refused when the config is loaded, before any model is built.
    with pytest.raises(ConfigError, match=r"MODEL\.BACKBONE\.CONV_BODY.*Did you mean 'R-50-FPN'"):
        load_config(None, ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.CONV_BODY", "R-50-FPNN"])


def test_retinanet_without_rpn_only_is_refused_at_load_time():
    with pytest.raises(ConfigError, match=r"MODEL\.RPN_ONLY"):
        load_config(None, ["MODEL.DEVICE", "cpu", "MODEL.RETINANET_ON", "True",
                           "MODEL.BACKBONE.CONV_BODY", "R-50-FPN-RETINANET"])


def test_fbnet_keys_name_the_missing_feature(tmp_path):
    path = tmp_path / "fbnet.yaml"
    path.write_text("MODEL:\n  FBNET:\n    ARCH: \"default\"\n")
    with pytest.raises(ConfigError, match=r"fbnet\.yaml: MODEL\.FBNET belongs to FBNet backbones"):
        load_config(path)
