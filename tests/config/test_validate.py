"""validate_config: impossible values fail at load time with the key, the value and what is allowed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detbench.config import ConfigError, get_cfg, load_config, validate_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
ALL_CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))
FPN = ["MODEL.BACKBONE.CONV_BODY", "R-50-FPN", "MODEL.RPN.USE_FPN", "True", "MODEL.ROI_HEADS.USE_FPN", "True",
       "MODEL.RPN.ANCHOR_STRIDE", "(4, 8, 16, 32, 64)",
       "MODEL.ROI_BOX_HEAD.POOLER_SCALES", "(0.25, 0.125, 0.0625, 0.03125)"]


def test_defaults_are_valid():
    validate_config(get_cfg())


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in ALL_CONFIGS])
def test_every_shipped_config_is_valid(path):
    assert load_config(path).MODEL.META_ARCHITECTURE == "GeneralizedRCNN"


# (overrides, key in the message, the value as the message prints it, words of what is allowed)
BAD = [
    (["SOLVER.BASE_LR", "-0.02"], "SOLVER.BASE_LR", "-0.02", "> 0"),
    (["SOLVER.BASE_LR", "0"], "SOLVER.BASE_LR", "0.0", "> 0"),
    (["SOLVER.MOMENTUM", "1.0"], "SOLVER.MOMENTUM", "1.0", "[0, 1)"),
    (["SOLVER.MOMENTUM", "-0.1"], "SOLVER.MOMENTUM", "-0.1", "[0, 1)"),
    (["SOLVER.WEIGHT_DECAY", "-1e-4"], "SOLVER.WEIGHT_DECAY", "-0.0001", ">= 0"),
    (["SOLVER.WEIGHT_DECAY_BIAS", "-1"], "SOLVER.WEIGHT_DECAY_BIAS", "-1.0", ">= 0"),
    (["SOLVER.GAMMA", "0"], "SOLVER.GAMMA", "0.0", "(0, 1]"),
    (["SOLVER.GAMMA", "1.5"], "SOLVER.GAMMA", "1.5", "(0, 1]"),
    (["SOLVER.STEPS", "(300, 200)"], "SOLVER.STEPS", "(300, 200)", "strictly increasing"),
    (["SOLVER.STEPS", "(200, 200)"], "SOLVER.STEPS", "(200, 200)", "strictly increasing"),
    (["SOLVER.STEPS", "(-5,)"], "SOLVER.STEPS", "(-5,)", "> 0"),
    (["SOLVER.WARMUP_METHOD", "cosine"], "SOLVER.WARMUP_METHOD", "'cosine'", "'linear'"),
    (["SOLVER.WARMUP_FACTOR", "0"], "SOLVER.WARMUP_FACTOR", "0.0", "(0, 1]"),
    (["SOLVER.WARMUP_FACTOR", "2"], "SOLVER.WARMUP_FACTOR", "2.0", "(0, 1]"),
    (["SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER", "0", "> 0"),
    (["SOLVER.IMS_PER_BATCH", "-2"], "SOLVER.IMS_PER_BATCH", "-2", "> 0"),
    (["SOLVER.CHECKPOINT_PERIOD", "0"], "SOLVER.CHECKPOINT_PERIOD", "0", "> 0"),
    (["INPUT.MIN_SIZE_TRAIN", "(640, 1400)"], "INPUT.MIN_SIZE_TRAIN", "(640, 1400)", "MAX_SIZE_TRAIN = 1333"),
    (["INPUT.MIN_SIZE_TRAIN", "()"], "INPUT.MIN_SIZE_TRAIN", "()", "non-empty"),
    (["INPUT.MIN_SIZE_TEST", "1400"], "INPUT.MIN_SIZE_TEST", "1400", "MAX_SIZE_TEST = 1333"),
    (["INPUT.PIXEL_MEAN", "[1.0, 2.0]"], "INPUT.PIXEL_MEAN", "[1.0, 2.0]", "3 finite numbers"),
    (["INPUT.PIXEL_STD", "[1.0, 0.0, 1.0]"], "INPUT.PIXEL_STD", "[1.0, 0.0, 1.0]", "> 0"),
    (["INPUT.PIXEL_STD", "[1.0, 1.0, 1.0, 1.0]"], "INPUT.PIXEL_STD", "[1.0, 1.0, 1.0, 1.0]", "3 numbers"),
    (["MODEL.ROI_BOX_HEAD.NUM_CLASSES", "1"], "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "1", ">= 2"),
    (["MODEL.RPN.FG_IOU_THRESHOLD", "1.2"], "MODEL.RPN.FG_IOU_THRESHOLD", "1.2", "[0, 1]"),
    (["MODEL.ROI_HEADS.BG_IOU_THRESHOLD", "-0.1"], "MODEL.ROI_HEADS.BG_IOU_THRESHOLD", "-0.1", "[0, 1]"),
    (["MODEL.RPN.BG_IOU_THRESHOLD", "0.8"], "MODEL.RPN.BG_IOU_THRESHOLD", "0.8", "FG_IOU_THRESHOLD = 0.7"),
    (["MODEL.ROI_HEADS.FG_IOU_THRESHOLD", "0.4"], "MODEL.ROI_HEADS.BG_IOU_THRESHOLD", "0.5",
     "FG_IOU_THRESHOLD = 0.4"),
    (["MODEL.RPN.POSITIVE_FRACTION", "0"], "MODEL.RPN.POSITIVE_FRACTION", "0.0", "(0, 1]"),
    (["MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.5"], "MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.5", "(0, 1]"),
    (["MODEL.DEVICE", "gpu"], "MODEL.DEVICE", "'gpu'", "'cuda:N'"),
    (["MODEL.DEVICE", "cuda:x"], "MODEL.DEVICE", "'cuda:x'", "'cuda:N'"),
    (["DTYPE", "bfloat16"], "DTYPE", "'bfloat16'", "'float16'"),
    (["MODEL.GROUP_NORM.DIM_PER_GP", "16"], "MODEL.GROUP_NORM.DIM_PER_GP / NUM_GROUPS", "(16, 32)", "exactly one"),
    (["MODEL.GROUP_NORM.NUM_GROUPS", "-1"], "MODEL.GROUP_NORM.DIM_PER_GP / NUM_GROUPS", "(-1, -1)", "exactly one"),
    (["MODEL.RPN.ANCHOR_STRIDE", "(16, 32)"], "MODEL.RPN.ANCHOR_STRIDE", "(16, 32)", "one stride without"),
    (FPN + ["MODEL.RPN.ANCHOR_STRIDE", "(4, 8, 16, 32)"], "MODEL.RPN.ANCHOR_STRIDE", "(4, 8, 16, 32)",
     "one per ANCHOR_SIZES entry (5)"),
    (FPN + ["MODEL.ROI_BOX_HEAD.POOLER_SCALES", "(0.25, 0.125)"], "MODEL.ROI_BOX_HEAD.POOLER_SCALES",
     "(0.25, 0.125)", "4 scales"),
    (FPN + ["MODEL.MASK_ON", "True"],
     "MODEL.ROI_MASK_HEAD.POOLER_SCALES", "(0.0625,)", "4 scales"),
    (["MODEL.ROI_BOX_HEAD.POOLER_SCALES", "(0.0,)"], "MODEL.ROI_BOX_HEAD.POOLER_SCALES", "(0.0,)", "> 0"),
]


@pytest.mark.parametrize("opts, key, value, allowed", BAD, ids=[" ".join(b[0][-2:]) for b in BAD])
def test_impossible_value_names_key_value_and_rule(opts, key, value, allowed):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["MODEL.DEVICE", "cpu", *opts])
    line = next((ln for ln in str(info.value).splitlines() if ln.strip().startswith(f"{key} = ")), None)
    assert line is not None, f"no line for {key} in:\n{info.value}"
    assert f"= {value}" in line and allowed in line, line


# (key, typo, the nearest name the error must suggest)
TYPOS = [
    ("MODEL.META_ARCHITECTURE", "GeneralisedRCNN", "GeneralizedRCNN"),
    ("MODEL.BACKBONE.CONV_BODY", "R-50-FPN-RETINA", "R-50-FPN-RETINANET"),
    ("MODEL.RESNETS.STEM_FUNC", "StemWithFixedBN", "StemWithFixedBatchNorm"),
    ("MODEL.RESNETS.TRANS_FUNC", "BottleneckWithGroupNorm", "BottleneckWithGN"),
    ("MODEL.RPN.RPN_HEAD", "SingleConvRPNHeads", "SingleConvRPNHead"),
    ("MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", "FPN2MLPFeatureExtracter", "FPN2MLPFeatureExtractor"),
    ("MODEL.ROI_BOX_HEAD.PREDICTOR", "FPNPredicter", "FPNPredictor"),
    ("MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR", "MaskRCNNFPNFeatureExtractr", "MaskRCNNFPNFeatureExtractor"),
    ("MODEL.ROI_MASK_HEAD.PREDICTOR", "MaskRCNNC4Predicter", "MaskRCNNC4Predictor"),
    ("MODEL.ROI_KEYPOINT_HEAD.FEATURE_EXTRACTOR", "KeypointRCNNFeatureExtractr", "KeypointRCNNFeatureExtractor"),
    ("MODEL.ROI_KEYPOINT_HEAD.PREDICTOR", "KeypointRCNNPredicter", "KeypointRCNNPredictor"),
]


@pytest.mark.parametrize("key, typo, nearest", TYPOS, ids=[t[0] for t in TYPOS])
def test_unknown_registered_name_suggests_the_nearest(key, typo, nearest):
    pattern = rf"{re.escape(key)} = '{re.escape(typo)}'.*Did you mean '{re.escape(nearest)}'.*Known: "
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [key, typo])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused(tmp_path, value):
    path = tmp_path / "lr.yaml"
    path.write_text(f"SOLVER:\n  BASE_LR: {'.nan' if value != value else '.inf'}\n")  # YAML spellings
    with pytest.raises(ConfigError, match=rf"SOLVER\.BASE_LR = {value}: must be a number > 0"):
        load_config(path)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError, match=r"^3 invalid config values") as info:
        load_config(None, ["SOLVER.BASE_LR", "-1", "SOLVER.MAX_ITER", "0", "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "0"])
    keys = [ln.split(" = ")[0].strip() for ln in str(info.value).splitlines()[1:]]
    assert keys == ["SOLVER.BASE_LR", "SOLVER.MAX_ITER", "MODEL.ROI_BOX_HEAD.NUM_CLASSES"]


@pytest.mark.parametrize("opts", [
    ["SOLVER.STEPS", "(30000, 50000)", "SOLVER.MAX_ITER", "100"],  # steps beyond MAX_ITER: a shortened schedule
    ["SOLVER.STEPS", "()"],  # no decay at all
    ["MODEL.DEVICE", "cuda:3"],  # no GPU needed to check a config
    ["MODEL.GROUP_NORM.DIM_PER_GP", "16", "MODEL.GROUP_NORM.NUM_GROUPS", "-1"],
    ["MODEL.ROI_KEYPOINT_HEAD.POOLER_SCALES", "(0.25, 0.125)", *FPN],  # the keypoint head is off: not checked
    ["INPUT.MIN_SIZE_TRAIN", "(1333,)"],  # equal to MAX_SIZE_TRAIN
], ids=["steps-beyond-max-iter", "no-steps", "cuda-index", "dim-per-group", "inactive-head", "min-equals-max"])
def test_edge_values_are_allowed(opts):
    load_config(None, opts)


def test_load_config_leaves_valid_values_unchanged():
    cfg = load_config(None, ["MODEL.DEVICE", "cpu"], freeze=False)
    expected = get_cfg()
    expected.MODEL.DEVICE = "cpu"
    expected.OUTPUT_DIR = "output/defaults"  # the default "output/{config}" without a config file
    assert not cfg.is_frozen() and cfg == expected


def test_validate_config_checks_a_config_built_in_code():
    cfg = get_cfg()
    cfg.INPUT.MAX_SIZE_TEST = 600  # below the default MIN_SIZE_TEST of 800
    with pytest.raises(ConfigError, match=r"INPUT\.MIN_SIZE_TEST = 800: must be <= MAX_SIZE_TEST = 600"):
        validate_config(cfg)
