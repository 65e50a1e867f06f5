"""Regression guard on what training learns: configs/tests/shapes_regression.yaml (Mask R-CNN from
scratch on the generated shapes, about a minute on 2 CPU cores) through tools/train_net.py.

The config pins its own box and mask AP on shapes_val in TEST.EXPECTED_RESULTS, so the tool exits
non-zero when training gets worse (or better: then measure again and update the config). The run
also evaluates half-way (SOLVER.TEST_PERIOD): that evaluation and the final one are both in
metrics.jsonl and the TensorBoard events, and the model learned in between.

One thread (OMP_NUM_THREADS=1) and SEED 1 make the run reproducible: on one machine the AP is the
same to every digit from run to run; the config's comment says what the tolerance allows for.
After a change meant to alter training, measure the pinned values again with

    OMP_NUM_THREADS=1 python tools/train_net.py --config-file configs/tests/shapes_regression.yaml \
        --no-resume SOLVER.TEST_PERIOD 150 "TEST.EXPECTED_RESULTS" "[]" OUTPUT_DIR /tmp/regression

and copy the bbox and segm AP of the last line of /tmp/regression/metrics.jsonl into the config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "tests" / "shapes_regression.yaml"


def _pinned() -> dict[tuple[str, str], list[float]]:
    """(task, metric) -> [mean, std] from the config's TEST.EXPECTED_RESULTS."""
    entries = yaml.safe_load(CONFIG.read_text())["TEST"]["EXPECTED_RESULTS"]
    return {(task, metric): stats for _, task, metric, stats in entries}


def test_the_config_pins_box_and_mask_ap():
    pinned = _pinned()
    assert set(pinned) == {("bbox", "AP"), ("segm", "AP")}
    assert all(0 < std <= 0.03 for _, std in pinned.values())  # a window that catches a real loss of AP


def test_short_run_from_scratch_reaches_the_pinned_ap(tmp_path):
    max_iter = yaml.safe_load(CONFIG.read_text())["SOLVER"]["MAX_ITER"]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "DETBENCH_DATASETS": str(tmp_path / "datasets")}
    result = subprocess.run([sys.executable, "tools/train_net.py", "--config-file", str(CONFIG), "--no-resume",
                             "SOLVER.TEST_PERIOD", str(max_iter // 2), "OUTPUT_DIR", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)  # only a hang guard
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]  # a missed TEST.EXPECTED_RESULTS exits 1, naming the AP
    assert "PASS: shapes_val bbox AP" in log and "PASS: shapes_val segm AP" in log

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = {r["iteration"]: r["eval"]["shapes_val"] for r in records if "eval" in r}
    assert sorted(evals) == [max_iter // 2, max_iter]  # the periodic evaluation and the final one
    for task in ("bbox", "segm"):
        assert evals[max_iter][task]["AP"] > evals[max_iter // 2][task]["AP"] + 0.02, evals  # it learned on
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(out))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("eval/shapes_val/segm/AP")]
    assert steps == [max_iter // 2, max_iter]
