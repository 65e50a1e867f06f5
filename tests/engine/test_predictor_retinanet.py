"""Predictor and tools/visualize.py with a RetinaNet (the shapes recipe, random weights)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from detbench.config import load_config
from detbench.engine.predictor import Predictor
from detbench.modeling.detector import build_detection_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "quickstart" / "retinanet_R_18_FPN_shapes.yaml"
# Every candidate passes (random weights score ~0.01), at the image's own size (no resize).
OPTS = ["MODEL.DEVICE", "cpu", "MODEL.RETINANET.INFERENCE_TH", "0.0", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "96", "DATASETS.TEST", "()"]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_detection_model(load_config(CONFIG, [*OPTS, "MODEL.WEIGHT", ""]))
    path = tmp_path_factory.mktemp("retinanet") / "model.pth"
    torch.save(model.state_dict(), path)
    return path


def test_predictor_returns_the_models_detections(weights):
    cfg = load_config(CONFIG, [*OPTS, "MODEL.WEIGHT", str(weights)])
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    detections = Predictor(cfg)(image)
    assert detections.size == (96, 64) and len(detections) == cfg.MODEL.RETINANET.DETECTIONS_PER_IMG
    labels = detections.get_field("labels")
    assert labels.min() >= 1 and labels.max() <= cfg.MODEL.RETINANET.NUM_CLASSES - 1
    # The same image normalised by hand and given to the model directly.
    model = build_detection_model(cfg)
    model.load_state_dict(torch.load(weights, weights_only=True))
    tensor = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - MEAN) / STD
    with torch.no_grad():
        direct = model.eval()([tensor])[0]
    assert_close(detections.bbox, direct.bbox, atol=1e-4, rtol=0)
    assert_close(detections.get_field("scores"), direct.get_field("scores"))


def test_visualize_draws_retinanet_detections(weights, tmp_path):
    spec = importlib.util.spec_from_file_location("visualize_tool", ROOT / "tools" / "visualize.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    source = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(source).save(folder / "a.png")
    tool.main(["--config-file", str(CONFIG), "--input", str(folder), "--output", str(out),
               "--confidence-threshold", "0.0", *OPTS, "MODEL.WEIGHT", str(weights)])
    drawn = np.asarray(Image.open(out / "a.png"))
    # Small pictures are enlarged by a whole factor (--min-size 512): 64 x 96 -> 512 x 768, nearest.
    assert drawn.shape == (512, 768, 3)
    assert (drawn != source.repeat(8, axis=0).repeat(8, axis=1)).any()  # something was drawn
