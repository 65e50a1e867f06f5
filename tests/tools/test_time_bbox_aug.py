"""tools/time_bbox_aug.py: settings parsing, and one run on a tiny dataset with a tiny model."""

from __future__ import annotations

import contextlib
import io
import runpy
from pathlib import Path

import pytest
import torch

from detbench.config import load_config
from detbench.data.datasets.shapes import generate_shapes
from detbench.modeling.detector import build_detection_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "quickstart" / "mask_rcnn_R_18_FPN_shapes.yaml"


def _tool() -> dict:
    """The globals of tools/time_bbox_aug.py, run as a module that is not __main__."""
    return runpy.run_path(str(ROOT / "tools" / "time_bbox_aug.py"), run_name="time_bbox_aug")


def test_settings_put_the_plain_model_first_and_enable_the_augmentation():
    settings = _tool()["_settings"](["flip=TEST.BBOX_AUG.H_FLIP True", "s=TEST.BBOX_AUG.SCALES '(96, 128)'"])
    assert settings == [("plain", []), ("flip", ["TEST.BBOX_AUG.ENABLED", "True", "TEST.BBOX_AUG.H_FLIP", "True"]),
                        ("s", ["TEST.BBOX_AUG.ENABLED", "True", "TEST.BBOX_AUG.SCALES", "(96, 128)"])]
    with pytest.raises(SystemExit, match="NAME=KEY VALUE"):
        _tool()["_settings"](["TEST.BBOX_AUG.H_FLIP True"])


@pytest.mark.usefixtures("native_cpu_convolutions")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2
def test_prints_one_row_per_setting(tmp_path):
    images, ann = generate_shapes(tmp_path / "shapes", "val", num_images=2, image_size=(48, 64))
    opts = ["MODEL.DEVICE", "cpu", "DATASETS.CUSTOM", repr((("tiny", str(images), str(ann)),)),
            "DATASETS.TEST", "('tiny',)", "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "64",
            "TEST.IMS_PER_BATCH", "2"]
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    torch.save(build_detection_model(load_config(CONFIG, [*opts, "MODEL.WEIGHT", ""])).state_dict(), weights)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _tool()["main"](["--config-file", str(CONFIG), "--images", "2", "--setting", "flip=TEST.BBOX_AUG.H_FLIP True",
                      *opts, "MODEL.WEIGHT", str(weights)])
    rows = [line.split() for line in out.getvalue().splitlines()[2:]]
    assert [(r[0], r[1]) for r in rows] == [("plain", "1"), ("flip", "2")]
    assert float(rows[0][3]) == 1.0 and float(rows[1][2]) > 0
