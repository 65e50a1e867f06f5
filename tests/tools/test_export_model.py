"""tools/export_model.py: weights from OUTPUT_DIR's last checkpoint, a sample image, refusals."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detbench.config import load_config
from detbench.export import build_export_module
from detbench.modeling.detector import build_detection_model
from detbench.utils.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "quickstart" / "mask_rcnn_R_18_FPN_shapes.yaml"
SMALL = ["MODEL.MASK_ON", "False", "DATASETS.TEST", "()", "INPUT.MAX_SIZE_TEST", "200"]

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _tool():
    spec = importlib.util.spec_from_file_location("export_model_tool", ROOT / "tools" / "export_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exports_the_last_checkpoint_of_output_dir(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_detection_model(load_config(CONFIG, SMALL))
    Checkpointer(model, save_dir=tmp_path).save("model_0000010")
    sample = tmp_path / "sample.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(sample)
    out = tmp_path / "deploy" / "model.pt"
    _tool().main(["--config-file", str(CONFIG), "--format", "torchscript", "--output", str(out),
                  "--sample-image", str(sample), *SMALL, "OUTPUT_DIR", str(tmp_path)])
    loaded = torch.jit.load(str(out))
    image = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (120, 64, 3), dtype=np.uint8))
    boxes, scores, labels = loaded(image)
    # The checkpoint's weights, not a fresh initialisation: the saved model's scores.
    with torch.no_grad():
        expected = build_export_module(load_config(CONFIG, SMALL), model)(image)
    torch.testing.assert_close(scores, expected[1])
    assert len(scores) > 0 and boxes.shape == (len(scores), 4) and labels.dtype == torch.int64


def test_refuses_an_unexportable_config_by_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="MODEL.RPN_ONLY"):
        _tool().main(["--config-file", str(CONFIG), "--format", "onnx", "--output", str(tmp_path / "x.onnx"),
                      "MODEL.RPN_ONLY", "True", "MODEL.MASK_ON", "False"])


def test_needs_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no weights to export"):
        _tool().main(["--config-file", str(CONFIG), "--format", "torchscript", "--output", str(tmp_path / "x.pt"),
                      *SMALL, "OUTPUT_DIR", str(tmp_path / "empty")])
