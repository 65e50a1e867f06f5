"""tools/visualize.py end to end: predictions of a tiny saved model on an image folder, and
the ground truth of a small generated shapes split."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detbench.config import load_config
from detbench.data.datasets.shapes import ensure_shapes
from detbench.modeling.detector import build_detection_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/e2e_mask_rcnn_R_50_FPN.yaml"
# A Mask R-CNN with an R-18-FPN of 16-wide stages (0.8 M parameters); random weights.
TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.CONV_BODY", "R-18-FPN",
        "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
        "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "32",
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "6", "MODEL.ROI_MASK_HEAD.CONV_LAYERS", "(16,)",
        "MODEL.ROI_HEADS.SCORE_THRESH", "0.0", "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "5",
        "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "30", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "100",
        "DATASETS.TEST", "()"]


def _tool():
    """tools/visualize.py as a module, for the error paths (no subprocess start-up)."""
    spec = importlib.util.spec_from_file_location("visualize_tool", ROOT / "tools" / "visualize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DETBENCH_DATASETS": str(tmp_path / "datasets"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "tools/visualize.py", "--config-file", CONFIG, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_detection_model(load_config(ROOT / CONFIG, [*TINY, "MODEL.WEIGHT", ""]))
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    return path


def test_predictions_on_a_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(folder / "b.jpg")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"
    run = _run(["--input", str(folder), "--output", str(out), "--confidence-threshold", "0.0",
                *TINY, "MODEL.WEIGHT", str(_weights(tmp_path))], tmp_path)
    assert run.returncode != 0, "an unreadable image must make the run fail"
    assert "broken.png" in run.stderr and "1 image(s) could not be read" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    # Small images are enlarged by a whole factor to a shorter side >= 512 (--min-size).
    assert Image.open(out / "a.png").size == (70 * 11, 50 * 11) and Image.open(out / "b.png").size == (30 * 18, 40 * 18)
    drawn, source = np.asarray(Image.open(out / "a.png")), np.asarray(Image.open(folder / "a.png"))
    assert (drawn != source.repeat(11, axis=0).repeat(11, axis=1)).any(), "nothing was drawn"
    assert f"Wrote the images to {out}" in run.stdout and "detection(s)" in run.stdout
    # --num-images takes the first files in name order (the quickstart draws 8 of 200).
    first = tmp_path / "first"
    run = _run(["--input", str(folder), "--output", str(first), "--num-images", "1",
                *TINY, "MODEL.WEIGHT", str(_weights(tmp_path))], tmp_path)
    assert run.returncode == 0, run.stderr
    assert [p.name for p in first.iterdir()] == ["a.png"]


def test_ground_truth_of_a_shapes_split(tmp_path):
    images, ann_file = ensure_shapes(tmp_path / "shapes", "val", num_images=3)
    custom = repr((("mini_shapes", str(images), str(ann_file)),))
    out = tmp_path / "gt"
    run = _run(["--dataset", "mini_shapes", "--output", str(out), "--num-images", "2", "DATASETS.CUSTOM", custom],
               tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["mini_shapes_val_000000.png", "mini_shapes_val_000001.png"]
    drawn = np.asarray(Image.open(written[0]))
    source = np.asarray(Image.open(images / "val_000000.png").convert("RGB"))
    source = source.repeat(4, axis=0).repeat(4, axis=1)  # the 128-px images are drawn at 512 px
    assert drawn.shape == source.shape
    changed = (drawn != source).any(axis=2).mean()
    assert 0.01 < changed < 0.9, f"{changed:.1%} of the pixels changed"
    assert "instance(s)" in run.stdout


def test_missing_input_and_missing_weights(tmp_path):
    tool = _tool()
    with pytest.raises(SystemExit, match="does not exist"):
        tool.main(["--config-file", str(ROOT / CONFIG), "--input", str(tmp_path / "nope.jpg"),
                   "--output", str(tmp_path / "o"), *TINY, "MODEL.WEIGHT", "x.pth"])
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    with pytest.raises(SystemExit, match="no weights"):
        tool.main(["--config-file", str(ROOT / CONFIG), "--input", str(tmp_path / "x.png"),
                   "--output", str(tmp_path / "o"), *TINY, "MODEL.WEIGHT", "", "OUTPUT_DIR", str(tmp_path)])
