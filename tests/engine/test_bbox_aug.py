"""TEST.BBOX_AUG through the Predictor and the test_net path, with a tiny random Mask R-CNN.

The identity augmentation (no flip, no extra scale; or one extra scale equal to the test size)
must give exactly the plain model's detections, and the plain model's masks; a flipped
augmentation must change them (so the augmentation really runs); keypoint and RPN-only models
are refused by name.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from detbench.config import ConfigError, load_config
from detbench.data.datasets.shapes import generate_shapes
from detbench.engine.bbox_aug import AugmentedDetector, View, views_from_cfg
from detbench.engine.predictions_file import load_predictions
from detbench.engine.predictor import Predictor
from detbench.modeling.detector import build_detection_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "e2e_mask_rcnn_R_50_FPN.yaml"
RETINANET = ROOT / "configs" / "quickstart" / "retinanet_R_18_FPN_shapes.yaml"
# A Mask R-CNN with an R-18-FPN of 16-wide stages (as tests/engine/test_predictor.py), every box kept.
TINY_MODEL = [
    "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.CONV_BODY", "R-18-FPN",
    "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "32",
    "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "6", "MODEL.ROI_MASK_HEAD.CONV_LAYERS", "(16,)",
    "MODEL.ROI_HEADS.SCORE_THRESH", "0.0", "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "8",
    "MODEL.RPN.PRE_NMS_TOP_N_TEST", "100", "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "30",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "100", "DATASETS.TEST", "()",
]
KEYPOINTS = ["MODEL.KEYPOINT_ON", "True", "MODEL.ROI_KEYPOINT_HEAD.CONV_LAYERS", "(16,)",
             "MODEL.ROI_KEYPOINT_HEAD.POOLER_SCALES", "(0.25, 0.125, 0.0625, 0.03125)",
             "MODEL.ROI_KEYPOINT_HEAD.SHARE_BOX_FEATURE_EXTRACTOR", "False"]
IDENTITY = ["TEST.BBOX_AUG.ENABLED", "True"]
FLIP = [*IDENTITY, "TEST.BBOX_AUG.H_FLIP", "True", "TEST.BBOX_AUG.SCALES", "(48, 80)",
        "TEST.BBOX_AUG.SCALE_H_FLIP", "True", "TEST.BBOX_AUG.MAX_SIZE", "120"]

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _random_weights(config: Path, opts: list[str], path: Path) -> Path:
    """A state-dict file of the model of ``config`` + ``opts`` with seeded random weights."""
    torch.manual_seed(0)
    torch.save(build_detection_model(load_config(config, [*opts, "MODEL.WEIGHT", ""])).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return _random_weights(CONFIG, TINY_MODEL, tmp_path_factory.mktemp("bbox_aug") / "model.pth")


def _cfg(weights: Path, *extra: str, config: Path = CONFIG, base=TINY_MODEL):
    return load_config(config, [*base, "MODEL.WEIGHT", str(weights), *extra])


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(50, 75, 3), dtype=np.uint8), rng.integers(0, 256, (70, 45, 3), dtype=np.uint8)]


def _assert_same_detections(got, expected, mask_atol: float = 0.0) -> None:
    assert len(got) == len(expected) > 0
    assert got.size == expected.size
    assert torch.equal(got.bbox, expected.bbox)
    assert torch.equal(got.get_field("scores"), expected.get_field("scores"))
    assert torch.equal(got.get_field("labels"), expected.get_field("labels"))
    assert got.get_field("mask").shape == expected.get_field("mask").shape == (len(got), 1, *got.size[::-1])
    assert_close(got.get_field("mask"), expected.get_field("mask"), atol=mask_atol, rtol=0)


def test_views_follow_maskrcnn_benchmark_order(weights):
    cfg = _cfg(weights, *FLIP)
    assert views_from_cfg(cfg) == [View(64, 100), View(64, 100, True), View(48, 120), View(48, 120, True),
                                   View(80, 120), View(80, 120, True)]
    assert views_from_cfg(_cfg(weights, *IDENTITY)) == [View(64, 100)]


@pytest.mark.parametrize("postprocess_masks", [False, True])
def test_identity_augmentation_is_the_plain_model(weights, postprocess_masks):
    extra = ["MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS", str(postprocess_masks)]
    plain = Predictor(_cfg(weights, *extra))(_images())
    only_plain_view = Predictor(_cfg(weights, *extra, *IDENTITY))(_images())
    # The plain view twice: every box found twice, merged back into one; masks (p + p) / 2 = p.
    twice = Predictor(_cfg(weights, *extra, *IDENTITY, "TEST.BBOX_AUG.SCALES", "(64,)"))(_images())
    for a, b, c in zip(plain, only_plain_view, twice):
        _assert_same_detections(b, a)
        _assert_same_detections(c, a)


def test_flipped_and_scaled_views_change_the_result(weights):
    plain = Predictor(_cfg(weights))(_images())
    augmented = Predictor(_cfg(weights, *FLIP))(_images())
    for a, b in zip(plain, augmented):
        assert b.size == a.size and len(b) <= 8
        assert b.get_field("mask").shape == (len(b), 1, *b.size[::-1])
        assert 0 <= b.get_field("mask").min() and b.get_field("mask").max() <= 1
        same = len(a) == len(b) and torch.allclose(a.bbox, b.bbox)
        assert not same, "six views of a random model should not reproduce the plain detections"


def test_keypoint_and_rpn_only_models_are_refused(weights):
    with pytest.raises(ConfigError, match=r"TEST\.BBOX_AUG\.ENABLED.*MODEL\.KEYPOINT_ON"):
        _cfg(weights, *IDENTITY, *KEYPOINTS)
    with pytest.raises(ConfigError, match=r"TEST\.BBOX_AUG\.ENABLED.*MODEL\.RPN_ONLY"):
        _cfg(weights, *IDENTITY, "MODEL.RPN_ONLY", "True", "MODEL.MASK_ON", "False")
    # Built without the config check, the wrapper says the same.
    keypoints = build_detection_model(_cfg(weights, *KEYPOINTS))
    with pytest.raises(ValueError, match="MODEL.KEYPOINT_ON"):
        AugmentedDetector.from_cfg(keypoints, _cfg(weights, *IDENTITY))
    rpn_only = build_detection_model(_cfg(weights, "MODEL.RPN_ONLY", "True", "MODEL.MASK_ON", "False"))
    with pytest.raises(ValueError, match="MODEL.RPN_ONLY"):
        AugmentedDetector.from_cfg(rpn_only, _cfg(weights, *IDENTITY))


@pytest.mark.parametrize(
    "opts, key",
    [
        (["TEST.BBOX_AUG.SCALES", "(0, 800)"], "TEST.BBOX_AUG.SCALES"),
        (["TEST.BBOX_AUG.SCALES", "(5000,)"], "TEST.BBOX_AUG.SCALES"),  # above MAX_SIZE 4000
        (["TEST.BBOX_AUG.SCALES", "(600.5,)"], "TEST.BBOX_AUG.SCALES"),
        (["TEST.BBOX_AUG.MAX_SIZE", "0"], "TEST.BBOX_AUG.MAX_SIZE"),
        (["TEST.BBOX_AUG.H_FLIP", "yes"], "TEST.BBOX_AUG.H_FLIP"),
    ],
)
def test_bad_values_name_the_key(opts, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(CONFIG, opts)


def test_maskrcnn_benchmark_test_time_aug_file_loads(tmp_path):
    # The TEST section of maskrcnn-benchmark's configs/test_time_aug/e2e_mask_rcnn_R-50-FPN_1x.yaml.
    path = tmp_path / "tta.yaml"
    path.write_text("TEST:\n  BBOX_AUG:\n    ENABLED: True\n    H_FLIP: True\n"
                    "    SCALES: (400, 500, 600, 700, 900, 1000, 1100, 1200)\n    MAX_SIZE: 2000\n"
                    "    SCALE_H_FLIP: True\n")
    cfg = load_config(path)
    assert len(views_from_cfg(cfg)) == 2 + 2 * 8 and cfg.TEST.BBOX_AUG.MAX_SIZE == 2000


def test_retinanet_identity_augmentation_is_the_plain_model(tmp_path):
    opts = ["MODEL.DEVICE", "cpu", "MODEL.RETINANET.INFERENCE_TH", "0.0", "INPUT.MIN_SIZE_TEST", "64",
            "INPUT.MAX_SIZE_TEST", "96", "DATASETS.TEST", "()", "MODEL.RETINANET.DETECTIONS_PER_IMG", "20"]
    path = _random_weights(RETINANET, opts, tmp_path / "retinanet.pth")
    image = _images()[0]
    plain = Predictor(_cfg(path, config=RETINANET, base=opts))(image)
    identity = Predictor(_cfg(path, *IDENTITY, config=RETINANET, base=opts))(image)
    assert torch.equal(identity.bbox, plain.bbox) and len(plain) == 20
    assert torch.equal(identity.get_field("scores"), plain.get_field("scores"))
    flipped = Predictor(_cfg(path, *IDENTITY, "TEST.BBOX_AUG.H_FLIP", "True", config=RETINANET, base=opts))(image)
    assert len(flipped) == 20 and not torch.allclose(flipped.get_field("scores"), plain.get_field("scores"))


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory) -> str:
    images, ann = generate_shapes(tmp_path_factory.mktemp("shapes"), "val", num_images=3, image_size=(72, 120))
    return repr((("tiny", str(images), str(ann)),))


def _test_net(weights: Path, custom: str, out: Path, *extra: str) -> dict:
    """tools/test_net.py's main in this process; returns the saved predictions."""
    from detbench.cli.test import main

    opts = [*TINY_MODEL, "MODEL.WEIGHT", str(weights), "DATASETS.CUSTOM", custom, "DATASETS.TEST", "('tiny',)",
            "TEST.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out), *extra]
    with contextlib.redirect_stdout(io.StringIO()):
        main(["--config-file", str(CONFIG), *opts])
    return load_predictions(out / "inference" / "tiny" / "predictions.pth")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_test_net_applies_the_augmentation(weights, tiny_shapes, tmp_path):
    plain = _test_net(weights, tiny_shapes, tmp_path / "plain")
    identity = _test_net(weights, tiny_shapes, tmp_path / "identity", *IDENTITY)
    augmented = _test_net(weights, tiny_shapes, tmp_path / "augmented", *FLIP)
    assert sorted(plain) == sorted(identity) == sorted(augmented) == [0, 1, 2]
    for index in plain:
        a, b, c = plain[index], identity[index], augmented[index]
        assert a.size == b.size == c.size == (120, 72)  # the original image size
        assert torch.equal(a.bbox, b.bbox) and torch.equal(a.get_field("scores"), b.get_field("scores"))
        assert torch.equal(a.get_field("mask"), b.get_field("mask"))  # box-relative [K, 1, M, M]
        assert c.get_field("mask").shape[1:] == a.get_field("mask").shape[1:]
        assert not (len(a) == len(c) and torch.allclose(a.bbox, c.bbox))
