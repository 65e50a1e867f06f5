"""TensorBoard events: what the trainer writes to metrics.jsonl, read back from the event files."""

from __future__ import annotations

import json

import pytest

from detbench.engine.trainer import MetricsFile
from detbench.utils.events import scalars

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TRAIN = [{"loss": 2.5 - i / 10, "loss_classifier": 1.0, "loss_mask": float("nan"), "time": 0.3, "data": 0.01,
          "lr": 0.01 * i, "memory_mb": 900.0, "iteration": 20 * i} for i in (1, 2, 3)]
EVAL = {"iteration": 60, "eval": {"val": {"bbox": {"AP": 0.5, "AP50": 0.75, "AP75": 0.25, "APs": -1.0, "APm": 0.4,
                                                   "APl": 0.6},
                                          "segm": {"AP": 0.45}}}}


def test_scalars_of_records():
    assert dict(scalars(TRAIN[0])) == {"train/loss": 2.4, "train/loss_classifier": 1.0, "train/time": 0.3,
                                       "train/data": 0.01, "train/lr": 0.01, "train/memory_mb": 900.0}
    assert dict(scalars(EVAL)) == {"eval/val/bbox/AP": 0.5, "eval/val/bbox/AP50": 0.75, "eval/val/bbox/AP75": 0.25,
                                   "eval/val/bbox/APm": 0.4, "eval/val/bbox/APl": 0.6, "eval/val/segm/AP": 0.45}


def test_event_files_hold_every_record(tmp_path):
    metrics = MetricsFile(tmp_path)
    for record in TRAIN:
        metrics.write(record)
    assert metrics.append_eval(EVAL["iteration"], EVAL["eval"])
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
    (events,) = tmp_path.glob("events.out.tfevents.*")
    acc = event_accumulator.EventAccumulator(str(events))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags == {tag for record in [*TRAIN, EVAL] for tag, _ in scalars(record)}
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert loss == [(20, pytest.approx(2.4)), (40, pytest.approx(2.3)), (60, pytest.approx(2.2))]
    assert [(e.step, e.value) for e in acc.Scalars("eval/val/segm/AP")] == [(60, pytest.approx(0.45))]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1]) == EVAL


def test_no_output_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    MetricsFile("").write(TRAIN[0])
    assert list(tmp_path.iterdir()) == []
