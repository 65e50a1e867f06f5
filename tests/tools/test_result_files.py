"""Every file a train + test run writes is readable without unpickling code (weights_only=True, JSON,
YAML or text), and tools/test_net.py --from-predictions evaluates predictions.pth again without the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from detbench.data.datasets.shapes import generate_shapes
from detbench.engine.predictions_file import load_predictions

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str]) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _check_readable(path: Path) -> None:
    """Open ``path`` the safe way its kind allows; a pickle that needs weights_only=False fails."""
    name = path.name
    if name.endswith(".pth"):
        torch.load(path, map_location="cpu", weights_only=True)
    elif name.endswith(".jsonl"):
        for line in path.read_text().splitlines():
            json.loads(line)
    elif name.endswith(".json"):
        json.loads(path.read_text())
    elif name.endswith(".yaml"):
        yaml.safe_load(path.read_text())
    elif name.endswith(".png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elif name in ("last_checkpoint", "log.txt") or name.endswith(".txt"):
        path.read_text(encoding="utf-8")
    elif name.startswith("events.out.tfevents."):  # TensorBoard's protobuf records, no pickle
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(path))
        events.Reload()
        assert events.Tags()["scalars"], f"{path}: no scalars"
    else:
        pytest.fail(f"{path}: a file of unknown kind was written")


def test_every_output_file_is_safe_to_read_and_predictions_re_evaluate(tmp_path):
    images, ann = generate_shapes(tmp_path / "shapes", "val", 4, (48, 64))
    out = tmp_path / "out"
    args = ["--config-file", "configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml",
            "DATASETS.CUSTOM", repr((("tiny", str(images), str(ann)),)), "DATASETS.TRAIN", "('tiny',)",
            "DATASETS.TEST", "('tiny',)", "INPUT.MIN_SIZE_TRAIN", "(48,)", "INPUT.MAX_SIZE_TRAIN", "80",
            "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "80", "SOLVER.MAX_ITER", "2",
            "SOLVER.IMS_PER_BATCH", "2", "TEST.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "1",
            "DATALOADER.NUM_WORKERS", "0", "MODEL.ROI_HEADS.SCORE_THRESH", "0.0", "SEED", "0",
            "OUTPUT_DIR", str(out)]
    _run(["tools/train_net.py", *args])
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert {"model_final.pth", "predictions.pth", "coco_results.json", "metrics.jsonl"} <= {p.name for p in written}
    for path in written:
        _check_readable(path)
    folder = out / "inference" / "tiny"
    first = json.loads((folder / "coco_results.json").read_text())
    assert {"bbox", "segm"} <= set(first)
    assert sum(len(p) for p in load_predictions(folder / "predictions.pth").values()) > 0
    for name in ("coco_results.json", "bbox.json", "segm.json"):
        (folder / name).unlink()
    # A weight file that does not exist proves that the model is neither built nor loaded.
    log = _run(["tools/test_net.py", "--from-predictions", *args, "MODEL.WEIGHT", str(tmp_path / "absent.pth")])
    assert "COCO segm evaluation" in log
    assert json.loads((folder / "coco_results.json").read_text()) == first
