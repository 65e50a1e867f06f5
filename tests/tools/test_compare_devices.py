"""tools/compare_devices.py: the table, a CPU-vs-CPU dry run, and the GPU run when there is one."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml")
SMALL = ["SOLVER.IMS_PER_BATCH", "1", "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96"]


def _tool():
    spec = importlib.util.spec_from_file_location("compare_devices_tool", ROOT / "tools" / "compare_devices.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_table_relative_differences():
    runs = {"cpu": [{"loss": 2.0, "a": -0.5}], "cuda": [{"loss": 2.5, "a": -0.5}]}
    assert _tool().compare_table(runs) == [[1, "loss", 2.0, 2.5, 0.25], [1, "a", -0.5, -0.5, 0.0]]


def test_cpu_against_itself_is_identical(tmp_path):
    """Same weights, batches and sampler seed: a second CPU run repeats every loss bit for bit
    (the GPU run differs from it only by kernel rounding)."""
    out = tmp_path / "rows.json"
    assert _tool().main(["--config-file", CONFIG, "--iters", "2", "--other", "cpu", "--json", str(out), *SMALL]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 6  # the total and five loss terms, per iteration
    assert all(row[-1] == 0.0 and row[2] == row[3] for row in rows)
    assert rows[0][1] == "loss" and rows[0][2] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_first_iteration_matches_cpu(tmp_path):
    out = tmp_path / "rows.json"
    assert _tool().main(["--config-file", CONFIG, "--iters", "1", "--json", str(out), *SMALL]) == 0
    for row in json.loads(out.read_text())["rows"]:
        assert row[-1] < 1e-3, row  # first iteration: identical samples, rounding only
