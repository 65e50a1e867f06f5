"""Predictor: same preprocessing as the test loader, results in the original image's pixels.

The reference path is computed by hand: PIL bilinear resize, BGR255 conversion and mean
subtraction written out here, the model called directly, boxes and keypoints rescaled by
the size ratio, masks pasted with torchvision's paste_masks_in_image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks

from detbench.config import load_config
from detbench.engine.predictor import BACKGROUND, Predictor
from detbench.modeling.detector import build_detection_model

ROOT = Path(__file__).resolve().parents[2]
# A Mask + Keypoint R-CNN with an R-18-FPN of 16-wide stages: 0.8 M parameters, fast on a CPU.
TINY_MODEL = [
    "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.CONV_BODY", "R-18-FPN",
    "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "32",
    "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "4", "MODEL.ROI_MASK_HEAD.CONV_LAYERS", "(16,)",
    "MODEL.KEYPOINT_ON", "True", "MODEL.ROI_KEYPOINT_HEAD.CONV_LAYERS", "(16,)",
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_SCALES", "(0.25, 0.125, 0.0625, 0.03125)",
    "MODEL.ROI_KEYPOINT_HEAD.SHARE_BOX_FEATURE_EXTRACTOR", "False",
    "MODEL.ROI_HEADS.SCORE_THRESH", "0.0", "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "6",
    "MODEL.RPN.PRE_NMS_TOP_N_TEST", "100", "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "30",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "100",
    # Caffe2-style input: BGR in [0, 255] minus a mean, so the channel swap is tested too.
    "INPUT.TO_BGR255", "True", "INPUT.PIXEL_MEAN", "[100.0, 110.0, 120.0]", "INPUT.PIXEL_STD", "[50.0, 60.0, 70.0]",
    "DATASETS.TEST", "()",
]
CONFIG = ROOT / "configs" / "e2e_mask_rcnn_R_50_FPN.yaml"
H, W = 50, 75  # the network sees 64 x 96 (shorter side 64)


pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_detection_model(load_config(CONFIG, [*TINY_MODEL, "MODEL.WEIGHT", ""]))
    path = tmp_path_factory.mktemp("predictor") / "model.pth"
    torch.save(model.state_dict(), path)
    return path


def _cfg(weights: Path, *extra: str):
    return load_config(CONFIG, [*TINY_MODEL, "MODEL.WEIGHT", str(weights), *extra])


@pytest.fixture(scope="module")
def predictor(weights) -> Predictor:
    return Predictor(_cfg(weights))


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _reference(weights: Path, image: np.ndarray) -> dict[str, torch.Tensor]:
    """The model run by hand on the resized, normalised image; outputs mapped back to (W, H)."""
    model = build_detection_model(load_config(CONFIG, [*TINY_MODEL, "MODEL.WEIGHT", ""]))
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    resized = np.asarray(Image.fromarray(image).resize((96, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    bgr255 = resized[:, :, ::-1]  # RGB [0, 255] -> BGR [0, 255]
    normalised = (bgr255 - np.array([100.0, 110.0, 120.0])) / np.array([50.0, 60.0, 70.0])
    tensor = torch.from_numpy(normalised.astype(np.float32)).permute(2, 0, 1)
    with torch.no_grad():
        out = model([tensor])[0]
    assert out.size == (96, 64)
    scale = torch.tensor([W / 96, H / 64, W / 96, H / 64])
    boxes = out.bbox * scale
    keypoints = out.get_field("keypoints").keypoints.clone()
    keypoints[..., :2] *= scale[:2]
    masks = tv_paste_masks(out.get_field("mask"), boxes, (H, W))
    return {"boxes": boxes, "scores": out.get_field("scores"), "labels": out.get_field("labels"),
            "keypoints": keypoints, "mask": masks}


def test_matches_the_model_run_by_hand(predictor, weights):
    image = _image()
    result = predictor(image)
    expected = _reference(weights, image)
    assert result.size == (W, H)
    assert len(result) == len(expected["boxes"]) > 0, "the tiny model should return detections"
    assert_close(result.bbox, expected["boxes"])
    assert_close(result.get_field("scores"), expected["scores"])
    assert torch.equal(result.get_field("labels"), expected["labels"])
    assert_close(result.get_field("keypoints").keypoints, expected["keypoints"])
    assert result.get_field("keypoints").size == (W, H)
    mask = result.get_field("mask")
    assert mask.shape == (len(result), 1, H, W) and mask.dtype == torch.float32
    assert 0 <= mask.min() and mask.max() <= 1
    assert ((mask > 0) & (mask < 1)).any(), "probabilities, not thresholded masks"
    assert_close(mask, expected["mask"], atol=1e-5, rtol=1e-4)


def test_numpy_and_pil_inputs_agree(predictor):
    image = _image(1)
    from_array, from_pil = predictor(image), predictor(Image.fromarray(image))
    assert_close(from_array.bbox, from_pil.bbox)
    assert_close(from_array.get_field("mask"), from_pil.get_field("mask"))
    # A grayscale PIL image is expanded to RGB, like the datasets read it.
    gray = Image.fromarray(image[:, :, 0], mode="L")
    assert_close(predictor(gray).bbox, predictor(np.repeat(image[:, :, :1], 3, axis=2)).bbox)


def test_batch_and_score_threshold(predictor):
    images = [_image(2), _image(3)]
    batch = predictor(images)
    assert isinstance(batch, list) and len(batch) == 2
    for image, result in zip(images, batch):
        single = predictor(image)
        assert result.size == (W, H)
        assert_close(result.bbox, single.bbox, atol=1e-4, rtol=1e-4)
    scores = batch[0].get_field("scores")
    threshold = float(scores.median())
    kept = predictor(images[0], score_threshold=threshold)
    assert len(kept) == int((scores >= threshold).sum()) < len(scores) or len(scores) == 1
    assert (kept.get_field("scores") >= threshold).all()
    assert predictor([]) == []


@pytest.mark.parametrize(
    "bad, error",
    [
        (np.zeros((H, W, 3), dtype=np.float32), ValueError),  # float pixels
        (np.zeros((H, W, 4), dtype=np.uint8), ValueError),  # RGBA array
        (np.zeros((H, W), dtype=np.uint8), ValueError),  # grayscale array
        (np.zeros((0, W, 3), dtype=np.uint8), ValueError),  # empty
        (torch.zeros(3, H, W, dtype=torch.uint8), TypeError),  # a tensor
        ("image.jpg", TypeError),  # a path
    ],
)
def test_bad_inputs_raise(predictor, bad, error):
    with pytest.raises(error, match="H x W x 3|numpy array|empty"):
        predictor(bad)


def test_empty_weight_is_refused():
    with pytest.raises(ValueError, match="MODEL.WEIGHT"):
        Predictor(load_config(CONFIG, [*TINY_MODEL, "MODEL.WEIGHT", ""]))


def test_compile_backbone_wraps_only_the_backbone(weights):
    # Calling it would compile (seconds to minutes); tools/benchmark.py --sections deploy runs it.
    predictor = Predictor(_cfg(weights), compile_backbone=True)
    assert isinstance(predictor.model.backbone, torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(predictor.model.rpn, torch._dynamo.eval_frame.OptimizedModule)
    assert predictor.model.backbone._orig_mod is not None


def test_class_names(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("DETBENCH_DATASETS", str(tmp_path / "datasets"))
    assert Predictor(_cfg(weights)).class_names is None  # no DATASETS.TEST
    assert Predictor(_cfg(weights), class_names=["bg", "a", "b", "c"]).class_names == ["bg", "a", "b", "c"]
    # shapes: known without generating the dataset
    shapes = Predictor(_cfg(weights, "DATASETS.TEST", "('shapes_val',)"))
    assert shapes.class_names == [BACKGROUND, "circle", "square", "triangle", "star", "ring"]
    assert not (tmp_path / "datasets").exists(), "nothing may be generated or downloaded"
    # a custom COCO json: names in category-id order (the dataset's contiguous labels)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": [
        {"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}]}))
    custom = repr((("mine", str(tmp_path), str(ann)),))
    names = Predictor(_cfg(weights, "DATASETS.CUSTOM", custom, "DATASETS.TEST", "('mine',)")).class_names
    assert names == [BACKGROUND, "cat", "dog"]
    # COCO itself, not downloaded: unknown
    assert Predictor(_cfg(weights, "DATASETS.TEST", "('coco_2017_val',)")).class_names is None
