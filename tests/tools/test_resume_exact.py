"""A real training run (tools/train_net.py, Mask R-CNN, multi-scale + flips) killed with SIGKILL
at a random iteration between two checkpoints and restarted with the same command ends with
weights and optimizer state bit-identical to an uninterrupted run, for NUM_WORKERS 0, 1 and 2.

The data is a few tiny images of the generated shapes dataset; the model is the quickstart
Mask R-CNN (ResNet-18 FPN at half width, GroupNorm) at 40-56 px, so a run takes seconds.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detbench.data.datasets.shapes import generate_shapes

ROOT = Path(__file__).resolve().parents[2]
POSIX = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
MAX_ITER, PERIOD = 10, 4  # checkpoints at 4, 8 and the final one at 10
TIMEOUT = 240


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), "train", 6, (48, 64))


def _command(data: tuple[Path, Path], out: Path, workers: int) -> list[str]:
    images, ann = data
    return [sys.executable, "tools/train_net.py", "--skip-test",
            "--config-file", "configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml",
            "DATASETS.CUSTOM", repr((("tiny", str(images), str(ann)),)), "DATASETS.TRAIN", "('tiny',)",
            "DATASETS.TEST", "()", "INPUT.MIN_SIZE_TRAIN", "(40, 48, 56)", "INPUT.MAX_SIZE_TRAIN", "80",
            "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", "0.5", "SOLVER.MAX_ITER", str(MAX_ITER),
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", str(PERIOD), "SOLVER.LOG_PERIOD", "1",
            "DATALOADER.NUM_WORKERS", str(workers), "SEED", "3", "OUTPUT_DIR", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(command: list[str]) -> str:
    result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _kill_at(command: list[str], iteration: int, delay: float) -> None:
    """Start ``command``, SIGKILL it ``delay`` s after it logs iteration ``iteration``."""
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline, seen = time.monotonic() + TIMEOUT, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if re.search(rf"\biter: {iteration}\b", line):
            time.sleep(delay)
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == -signal.SIGKILL
            return
    proc.kill()
    pytest.fail(f"never saw iteration {iteration}: {''.join(seen)[-3000:]}")


def _assert_bit_identical(a_file: Path, b_file: Path, context: str) -> None:
    a, b = (torch.load(f, weights_only=True) for f in (a_file, b_file))
    assert a["iteration"] == b["iteration"] == MAX_ITER, context
    assert a["model"].keys() == b["model"].keys()
    for key in b["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0,
                                   msg=lambda m, key=key: f"{key} ({context}): {m}")
    torch.testing.assert_close(a["optimizer"]["state"], b["optimizer"]["state"], rtol=0, atol=0)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """model_final.pth of an uninterrupted run with NUM_WORKERS 0."""
    out = tmp_path_factory.mktemp("reference")
    _run(_command(data, out, workers=0))
    return out / "model_final.pth"


@POSIX
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_sigkill_between_checkpoints_then_resume_is_bit_identical(data, reference, tmp_path, workers):
    rng = random.Random()
    kill_at, delay = rng.randint(PERIOD + 1, 2 * PERIOD - 1), rng.uniform(0.0, 0.05)
    context = f"NUM_WORKERS {workers}, killed {delay:.3f} s after iteration {kill_at}"  # to reproduce
    command = _command(data, tmp_path, workers)
    _kill_at(command, kill_at, delay)
    assert (tmp_path / "last_checkpoint").read_text().strip() == f"model_{PERIOD:07d}.pth", context
    log = _run(command)
    assert f"Start training at iteration {PERIOD} of {MAX_ITER}" in log, context
    _assert_bit_identical(tmp_path / "model_final.pth", reference, context)


def test_resume_with_another_model_or_data_order_is_refused_naming_the_keys(data, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference.parent, out)
    command = _command(data, out, workers=0)
    changed = [*command, "SOLVER.MAX_ITER", str(MAX_ITER + 2), "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "4",
               "INPUT.MIN_SIZE_TRAIN", "(48,)"]
    result = subprocess.run(changed, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode != 0
    assert "refusing to resume" in result.stderr and "2 key(s)" in result.stderr, result.stderr[-3000:]
    assert "MODEL.ROI_BOX_HEAD.NUM_CLASSES: 6 when saved, 4 now" in result.stderr
    assert "INPUT.MIN_SIZE_TRAIN: [40, 48, 56] when saved, [48] now" in result.stderr
    # Only the schedule changed: the run continues from its final checkpoint.
    log = _run([*command, "SOLVER.MAX_ITER", str(MAX_ITER + 2)])
    assert f"Start training at iteration {MAX_ITER} of {MAX_ITER + 2}" in log
