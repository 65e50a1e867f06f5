"""Training curves: metrics.jsonl parsing (bad lines, non-finite values), panels, the PNG."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detbench.utils.plot_metrics import (
    COLUMNS,
    PANEL_SIZE,
    collect_panels,
    plot_metrics,
    read_metrics,
    smooth,
)

ROOT = Path(__file__).resolve().parents[2]


def _write_metrics(folder: Path) -> Path:
    """40 training records, two evaluations, a NaN loss, and a truncated last line."""
    lines = []
    for it in range(5, 205, 5):
        record = {"loss": 2.0 - it / 200, "loss_classifier": 1.0 - it / 400, "loss_mask": 1.0 - it / 400,
                  "time": 0.4, "data": 0.01, "iteration": it, "lr": 0.01 if it < 150 else 0.001, "memory_mb": 900.0}
        lines.append(json.dumps(record))
        if it in (100, 200):
            ev = {"val": {"bbox": {"AP": it / 1000, "AP50": it / 500, "APs": -1.0}, "segm": {"AP": it / 2000}}}
            lines.append(json.dumps({"iteration": it, "eval": ev}))
    lines.insert(3, json.dumps({"loss": float("nan"), "loss_mask": None, "iteration": 17, "lr": 0.01}))
    lines.append('{"loss": 0.5, "loss_classifier": 0.2, "itera')  # a crash mid-write
    path = folder / "metrics.jsonl"
    path.write_text("\n".join(lines))
    return path


def test_read_skips_the_corrupt_line_naming_it(tmp_path):
    path = _write_metrics(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"metrics.jsonl:44: skipped"):
        records = read_metrics(path)
    assert len(records) == 40 + 2 + 1


def test_panels_skip_non_finite_and_missing_values(tmp_path):
    with pytest.warns(RuntimeWarning):
        panels = collect_panels(read_metrics(_write_metrics(tmp_path)))
    assert list(panels) == ["loss", "loss_classifier", "loss_mask", "lr", "val bbox (%)", "val segm (%)"]
    assert len(panels["loss"]["loss"]) == 40  # the NaN at iteration 17 is left out
    assert len(panels["lr"]["lr"]) == 41
    assert set(panels["val bbox (%)"]) == {"AP", "AP50"}  # APs = -1 (no ground truth) is left out
    assert panels["val bbox (%)"]["AP50"] == [(100.0, 20.0), (200.0, 40.0)]
    assert all(math.isfinite(y) for series in panels.values() for points in series.values() for _, y in points)


def test_png_has_the_grid_size_and_is_not_blank(tmp_path):
    _write_metrics(tmp_path)
    with pytest.warns(RuntimeWarning):
        path = plot_metrics(tmp_path)
    assert path == tmp_path / "training_curves.png"
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (2 * PANEL_SIZE[1], COLUMNS * PANEL_SIZE[0], 3)  # 6 panels: 2 rows of 3
    white = (image == 255).all(axis=2)
    assert 0.02 < 1 - white.mean() < 0.5  # lines, text and frames on a white canvas
    # Each panel has drawn pixels of the first line colour (the curves themselves).
    blue = (np.abs(image.astype(int) - (31, 119, 180)).sum(axis=2) < 30)
    for row in range(2):
        for col in range(COLUMNS):
            panel = blue[row * PANEL_SIZE[1]:(row + 1) * PANEL_SIZE[1], col * PANEL_SIZE[0]:(col + 1) * PANEL_SIZE[0]]
            assert panel.sum() > 20, f"panel ({row}, {col}) has no curve"


def test_without_evaluations_and_errors(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "loss": 1.0, "lr": 0.1}) + "\n")
    path = plot_metrics(tmp_path, tmp_path / "sub" / "curves.png")
    assert Image.open(path).size == (2 * PANEL_SIZE[0], PANEL_SIZE[1])  # loss and lr only
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_metrics(tmp_path / "missing")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "time": 0.3}) + "\n")
    with pytest.raises(ValueError, match="nothing|no loss"):
        plot_metrics(tmp_path)


def test_smooth():
    assert smooth([0.0, 3.0, 6.0, 9.0], 3) == pytest.approx([1.5, 3.0, 6.0, 7.5])


def test_tool(tmp_path):
    _write_metrics(tmp_path)
    out = tmp_path / "x.png"
    run = subprocess.run([sys.executable, "tools/plot_metrics.py", str(tmp_path), "--output", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert out.is_file() and str(out) in run.stdout
    assert "metrics.jsonl:44: skipped" in run.stderr


def test_drawing_a_chart_does_not_import_the_model(tmp_path):
    _write_metrics(tmp_path)
    code = ("import sys, warnings; warnings.simplefilter('ignore'); from detbench.utils.plot_metrics import plot_metrics; "
            f"plot_metrics({str(tmp_path)!r}); print(sorted(m for m in sys.modules if m.startswith('detbench.modeling')))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
