"""The exported files (ONNX run by onnxruntime, TorchScript by torch.jit.load) against the
eager Predictor, on real photos of two sizes and on an image where nothing is detected.

Every family (Faster / Mask / Keypoint R-CNN, FPN and C4) is exported once per format, from
random weights. The box classifier's weights are scaled up so that class scores spread
over (0, 1); the uniform image of the pixel mean normalises to exactly zero, every feature
is then zero and every class scores 1 / C, below SCORE_THRESH = 1 / C + 0.1: no detection
(RetinaNet: every class scores its prior probability 0.01, below INFERENCE_TH 0.05).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from detbench.config import load_config
from detbench.engine.predictor import Predictor
from detbench.export import export_model, export_problems
from detbench.modeling.detector import build_detection_model
from detbench.structures.boxlist_ops import boxlist_iou
from detbench.structures.bounding_box import BoxList

from export_families import FAMILIES, MEAN_IMAGE_RGB

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
# The shared data sit next to the repository root (or next to the folder of a git worktree).
PENN_FUDAN = next((p for p in (ROOT.parent / "shared" / "data" / "PennFudanPed" / "PNGImages",
                               ROOT.parents[1] / "shared" / "data" / "PennFudanPed" / "PNGImages") if p.is_dir()),
                  ROOT.parent / "shared" / "data" / "PennFudanPed" / "PNGImages")
needs_photos = pytest.mark.skipif(not PENN_FUDAN.is_dir(), reason=f"{PENN_FUDAN} is absent")
CLASSIFIER_GAIN = 10.0  # the factor on the random box classifier's weights
# RetinaNet's classifier starts at PRIOR_PROB 0.01; at this gain some scores pass INFERENCE_TH 0.05.
RETINANET_GAIN = 100.0

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _photos() -> list[np.ndarray]:
    """Two Penn-Fudan photos of different sizes (559 x 536 and 455 x 414)."""
    files = sorted(PENN_FUDAN.glob("*.png"))[:2]
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def _mean_image() -> np.ndarray:
    image = np.empty((90, 130, 3), dtype=np.uint8)
    image[:] = MEAN_IMAGE_RGB
    return image


class Exported:
    """One family's eager Predictor and its two exported files."""

    def __init__(self, name: str, folder: Path) -> None:
        path, opts = FAMILIES[name]
        torch.manual_seed(0)
        model = build_detection_model(load_config(path, opts))
        weights = folder / f"{name}.pth"
        if model.roi_heads is None:  # RetinaNet: zero features give every class PRIOR_PROB, below INFERENCE_TH
            with torch.no_grad():
                model.rpn.head.cls_logits.weight.mul_(RETINANET_GAIN)
            extra = []
        else:
            with torch.no_grad():
                model.roi_heads["box"].predictor.cls_score.weight.mul_(CLASSIFIER_GAIN)
            threshold = 1.0 / model.roi_heads["box"].predictor.cls_score.out_features + 0.1
            extra = ["MODEL.ROI_HEADS.SCORE_THRESH", str(threshold)]
        torch.save(model.state_dict(), weights)
        cfg = load_config(path, [*opts, "MODEL.WEIGHT", str(weights), *extra])
        self.predictor = Predictor(cfg)
        self.onnx = export_model(cfg, "onnx", folder / f"{name}.onnx", model=self.predictor.model)
        self.torchscript = export_model(cfg, "torchscript", folder / f"{name}.pt", model=self.predictor.model)
        self.has_masks, self.has_keypoints = cfg.MODEL.MASK_ON, cfg.MODEL.KEYPOINT_ON

    def runner(self, fmt: str):
        """image uint8 [H, W, 3] -> the exported file's outputs, as torch tensors."""
        if fmt == "onnx":
            session = ort.InferenceSession(str(self.onnx), providers=["CPUExecutionProvider"])
            return lambda image: [torch.from_numpy(o) for o in session.run(None, {"image": image})]
        module = torch.jit.load(str(self.torchscript))
        return lambda image: list(module(torch.from_numpy(image.copy())))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def exported(request, tmp_path_factory) -> Exported:
    return Exported(request.param, tmp_path_factory.mktemp(request.param))


def _match(got: torch.Tensor, expected: BoxList) -> torch.Tensor:
    """For each expected detection, the index of the exported box of highest IoU with it."""
    iou = boxlist_iou(expected, BoxList(got, expected.size))
    best_iou, best = iou.max(dim=1)
    assert bool((best_iou > 0.99).all()), f"IoU of the best exported box per detection: {best_iou.tolist()}"
    return best


def _check(outputs: list[torch.Tensor], expected: BoxList, exported: Exported) -> None:
    boxes, scores, labels = outputs[:3]
    assert boxes.dtype == torch.float32 and scores.dtype == torch.float32 and labels.dtype == torch.int64
    assert len(boxes) == len(expected), f"{len(boxes)} exported detections, {len(expected)} eager"
    assert len(boxes) > 0, "the test needs detections on the photos"
    order = _match(boxes, expected)
    assert torch.equal(labels[order], expected.get_field("labels"))
    assert_close(scores[order], expected.get_field("scores"), atol=1e-3, rtol=0)
    extra = outputs[3:]
    if exported.has_masks:
        masks = extra.pop(0)
        assert masks.shape == (len(expected), 1, expected.size[1], expected.size[0])
        difference = (masks[order] - expected.get_field("mask")).abs().mean(dim=(1, 2, 3))
        assert bool((difference < 1e-2).all()), difference
    if exported.has_keypoints:
        keypoints = extra.pop(0)[order]
        assert keypoints.shape[-1] == 3
        # A maximum of a random heatmap can tie with another cell to float precision, and the
        # two runtimes may pick either: the value must agree, the location nearly always.
        assert_close(keypoints[..., 2], expected.get_field("keypoints_scores"), atol=1e-3, rtol=1e-3)
        moved = (keypoints[..., :2] - expected.get_field("keypoints").keypoints[..., :2]).abs().amax(-1) > 0.1
        assert float(moved.float().mean()) <= 0.02, f"{int(moved.sum())} of {moved.numel()} keypoints moved"
    assert not extra


@needs_photos
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_predictor_on_photos(exported: Exported, fmt: str) -> None:
    run = exported.runner(fmt)
    photos = _photos()
    assert photos[0].shape != photos[1].shape
    for photo in photos:
        _check(run(photo), exported.predictor(photo), exported)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_returns_empty_outputs(exported: Exported, fmt: str) -> None:
    image = _mean_image()
    assert len(exported.predictor(image)) == 0
    outputs = exported.runner(fmt)(image)
    shapes = [(0, 4), (0,), (0,)]
    shapes += [(0, 1, *image.shape[:2])] * exported.has_masks + [(0, 17, 3)] * exported.has_keypoints
    assert [tuple(o.shape) for o in outputs] == shapes


def test_unexportable_config_is_named_before_any_work(tmp_path) -> None:
    path, opts = FAMILIES["mask_fpn"]
    cfg = load_config(path, [*opts, "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS", "True", "MODEL.RPN_ONLY", "True"])
    problems = export_problems(cfg)
    assert any("MODEL.RPN_ONLY" in p for p in problems) and any("POSTPROCESS_MASKS" in p for p in problems)
    with pytest.raises(ValueError, match="MODEL.RPN_ONLY"):
        export_model(cfg, "onnx", tmp_path / "never.onnx")  # no weights either: the check comes first
    assert not (tmp_path / "never.onnx").exists()


def test_unknown_architecture_is_named() -> None:
    path, opts = FAMILIES["faster_fpn"]
    cfg = load_config(path, opts)
    cfg.defrost()
    cfg.MODEL.META_ARCHITECTURE = "RetinaNetNotHere"
    assert export_problems(cfg) == [
        "MODEL.META_ARCHITECTURE 'RetinaNetNotHere' has no export (exportable: GeneralizedRCNN)"
    ]
