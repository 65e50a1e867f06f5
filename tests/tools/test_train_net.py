"""tools/train_net.py and tools/test_net.py end to end on coco_mini (CPU, tiny images).

Covers: train, stop, resume from the checkpoint, evaluate bbox + segm, keypoints, and a
2-process torchrun (gloo) run in which every test image is evaluated exactly once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from detbench.engine.predictions_file import load_predictions

ROOT = Path(__file__).resolve().parents[2]
COCO_MINI = ROOT.parent / "shared" / "data" / "coco_mini"
pytestmark = pytest.mark.skipif(not COCO_MINI.is_dir(), reason=f"needs {COCO_MINI}")

TINY = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", "INPUT.MIN_SIZE_TRAIN", "(128,)",
        "INPUT.MAX_SIZE_TRAIN", "192", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.0025", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "(100,)", "SOLVER.LOG_PERIOD", "1", "TEST.IMS_PER_BATCH", "2",
        "DATALOADER.NUM_WORKERS", "0", "SEED", "0"]


def _subset(src: Path, dst: Path, num_images: int) -> Path:
    """The first ``num_images`` images of a COCO json and their annotations (written to tmp)."""
    data = json.loads(src.read_text())
    images = data["images"][:num_images]
    ids = {im["id"] for im in images}
    data.update(images=images, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    dst.write_text(json.dumps(data))
    return dst


def _datasets(tmp_path: Path, kind: str, num_test: int) -> list[str]:
    train = COCO_MINI / "annotations" / f"{kind}_train2017.json"
    val = _subset(COCO_MINI / "annotations" / f"{kind}_val2017.json", tmp_path / "val.json", num_test)
    custom = (("mini_train", str(COCO_MINI / "train2017"), str(train)),
              ("mini_val", str(COCO_MINI / "val2017"), str(val)))
    return ["DATASETS.CUSTOM", repr(custom), "DATASETS.TRAIN", "('mini_train',)", "DATASETS.TEST", "('mini_val',)"]


def _run(args: list[str], launcher: list[str] | None = None) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*(launcher or [sys.executable]), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _results(output: Path) -> dict:
    return json.loads((output / "inference" / "mini_val" / "coco_results.json").read_text())


def test_train_stop_resume_and_evaluate_masks(tmp_path):
    out = tmp_path / "out"
    common = ["--config-file", "configs/e2e_mask_rcnn_R_50_FPN.yaml", *TINY, *_datasets(tmp_path, "instances", 4),
              "OUTPUT_DIR", str(out), "SOLVER.CHECKPOINT_PERIOD", "2"]
    _run(["tools/train_net.py", *common, "SOLVER.MAX_ITER", "2", "--skip-test"])
    assert (out / "last_checkpoint").read_text().strip().endswith("model_final.pth")
    log = _run(["tools/train_net.py", *common, "SOLVER.MAX_ITER", "3"])
    assert "Start training at iteration 2 of 3" in log
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "eval" not in r] == [1, 2, 3]
    # The final evaluation is appended once, and drawn with the losses.
    evals = [r for r in records if "eval" in r]
    assert [r["iteration"] for r in evals] == [3] and "bbox" in str(evals[0]["eval"])
    assert (out / "training_curves.png").stat().st_size > 0
    results = _results(out)
    assert {"bbox", "segm"} <= set(results)
    for name in ("bbox.json", "segm.json", "predictions.pth"):
        assert (out / "inference" / "mini_val" / name).is_file()
    # test_net.py evaluates the last checkpoint of OUTPUT_DIR the same way.
    log = _run(["tools/test_net.py", *common])
    assert "COCO segm evaluation" in log


def test_keypoints_train_and_evaluate(tmp_path):
    out = tmp_path / "out"
    _run(["tools/train_net.py", "--config-file", "configs/e2e_keypoint_rcnn_R_50_FPN_1x.yaml", *TINY,
          *_datasets(tmp_path, "person_keypoints", 3), "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "1",
          "DATASETS.REMOVE_IMAGES_WITHOUT_ANNOTATIONS", "False"])
    assert {"bbox", "keypoints"} <= set(_results(out))


def test_torchrun_two_processes_evaluate_every_image_once(tmp_path):
    out = tmp_path / "out"
    num_test = 5  # odd, so the two ranks get different numbers of images
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    log = _run(["tools/train_net.py", "--config-file", "configs/e2e_faster_rcnn_R_50_FPN_1x.yaml", *TINY,
                *_datasets(tmp_path, "instances", num_test), "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "2"],
               launcher)
    assert "train_net: 2 process(es)" in log
    predictions = load_predictions(out / "inference" / "mini_val" / "predictions.pth")
    assert sorted(predictions) == list(range(num_test))
    assert "bbox" in _results(out)
    assert re.search(r"Start training at iteration 0 of 2", log)
