"""Checkpoints on disk: retention, falling back from unreadable checkpoints, saves that fail."""

from __future__ import annotations

import errno
import logging
import os
import time

import pytest
import torch
from torch import nn

from detbench.utils.checkpoint import POINTER, CheckpointError, Checkpointer
from detbench.utils.checkpoint_files import periodic_checkpoints, prune_checkpoints, resume_candidates


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_periodic_checkpoints_sorted_by_iteration_and_final_excluded(tmp_path):
    for name in ("model_0000010.pth", "model_0000002.pth", "model_final.pth", "model_x.pth", "other.pth"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in periodic_checkpoints(tmp_path)] == ["model_0000002.pth", "model_0000010.pth"]


@pytest.mark.parametrize("keep, kept", [(3, [6, 8, 10]), (1, [10]), (0, [2, 4, 6, 8, 10])])
def test_save_keeps_the_newest_periodic_checkpoints_and_the_final(tmp_path, keep, kept):
    ckpt = Checkpointer(_model(0), save_dir=tmp_path, keep=keep)
    for iteration in (2, 4, 6, 8, 10):
        ckpt.save(f"model_{iteration:07d}", iteration=iteration)
    ckpt.save("model_final", iteration=10)
    assert _names(tmp_path) == sorted([f"model_{i:07d}.pth" for i in kept] + ["model_final.pth", POINTER])


def test_prune_never_deletes_the_protected_file(tmp_path):
    for i in (1, 2, 3):
        (tmp_path / f"model_{i:07d}.pth").write_bytes(b"x")
    deleted = prune_checkpoints(tmp_path, 1, tmp_path / "model_0000001.pth", logging.getLogger("t"))
    assert [p.name for p in deleted] == ["model_0000002.pth"]
    assert _names(tmp_path) == ["model_0000001.pth", "model_0000003.pth"]


def _corrupt(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero bytes":
        path.write_bytes(b"")
    else:  # not a zip
        path.write_text("<html>503 Service Unavailable</html>")


def _three_checkpoints(tmp_path) -> list[nn.Module]:
    models = []
    for iteration in (1, 2, 3):
        model = _model(iteration)
        Checkpointer(model, save_dir=tmp_path).save(f"model_{iteration:07d}", iteration=iteration)
        os.utime(tmp_path / f"model_{iteration:07d}.pth", (iteration, 1000.0 + iteration))  # written in order
        models.append(model)
    return models


@pytest.mark.parametrize("how", ["truncated", "zero bytes", "not a zip"])
def test_unreadable_last_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog, how):
    models = _three_checkpoints(tmp_path)
    _corrupt(tmp_path / "model_0000003.pth", how)
    model = _model(9)
    with caplog.at_level(logging.WARNING):
        assert Checkpointer(model, save_dir=tmp_path).load() == {"iteration": 2}
    torch.testing.assert_close(model.weight, models[1].weight, rtol=0, atol=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Cannot resume from" in w and "model_0000003.pth" in w for w in warnings)
    assert any("Resuming from" in w and "model_0000002.pth" in w for w in warnings)


def test_pointer_to_a_missing_file_falls_back(tmp_path):
    _three_checkpoints(tmp_path)
    (tmp_path / "model_0000003.pth").unlink()
    assert Checkpointer(_model(9), save_dir=tmp_path).load() == {"iteration": 2}


def test_empty_pointer_is_not_a_restart_from_zero(tmp_path):
    _three_checkpoints(tmp_path)
    (tmp_path / POINTER).write_text("")
    assert Checkpointer(_model(9), save_dir=tmp_path).load() == {"iteration": 3}


def test_no_intact_checkpoint_stops_naming_every_file(tmp_path):
    _three_checkpoints(tmp_path)
    for i, how in zip((1, 2, 3), ("truncated", "zero bytes", "not a zip")):
        _corrupt(tmp_path / f"model_{i:07d}.pth", how)
    with pytest.raises(CheckpointError, match="can be read") as info:
        Checkpointer(_model(9), save_dir=tmp_path).load()
    message = str(info.value)
    assert all(f"model_{i:07d}.pth" in message for i in (1, 2, 3)) and "iteration 0" in message


def test_resume_candidates_order(tmp_path):
    _three_checkpoints(tmp_path)
    now = time.time()
    os.utime(tmp_path / "model_0000001.pth", (now, now))  # most recently written of the others
    order = [p.name for p in resume_candidates(tmp_path, tmp_path / "model_0000002.pth")]
    assert order == ["model_0000002.pth", "model_0000001.pth", "model_0000003.pth"]


class DiskFull:
    """A file object that accepts ``capacity`` bytes, then fails as a full disk does."""

    def __init__(self, f, capacity: int) -> None:
        self.f, self.left = f, capacity

    def write(self, data) -> int:
        if len(data) > self.left:
            self.f.write(bytes(data[: self.left]))
            self.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self) -> "DiskFull":
        return self

    def __exit__(self, *exc_info) -> None:
        self.f.close()


@pytest.mark.parametrize("target", ["checkpoint", "pointer"])
def test_save_on_a_full_disk_keeps_the_previous_state(tmp_path, monkeypatch, target):
    ckpt = Checkpointer(_model(0), save_dir=tmp_path, keep=1)
    ckpt.save("model_0000001", iteration=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_fdopen = os.fdopen
    calls = []

    def fdopen(fd, *args, **kwargs):  # the first opened file is the checkpoint, the second the pointer
        calls.append(fd)
        f = real_fdopen(fd, *args, **kwargs)
        return DiskFull(f, 4) if (target == "checkpoint") == (len(calls) == 1) else f

    monkeypatch.setattr("detbench.utils.checkpoint.os.fdopen", fdopen)
    # torch's zip writer turns the OSError into "unexpected pos"; the message says how full the disk is.
    with pytest.raises(CheckpointError, match=r"could not write .*(model_0000002\.pth|last_checkpoint) .*MiB free there.*"
                                              r"model_0000001\.pth\) and .*last_checkpoint are unchanged"):
        ckpt.save("model_0000002", iteration=2)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    if target == "checkpoint":
        assert after == before  # no partial file, pointer not moved, nothing pruned
    else:  # the new checkpoint is complete, but the pointer and the old checkpoint are untouched
        assert after[POINTER] == before[POINTER] and after["model_0000001.pth"] == before["model_0000001.pth"]
    monkeypatch.undo()
    assert Checkpointer(_model(5), save_dir=tmp_path).load() == {"iteration": 1}


def test_a_failed_save_stops_the_other_ranks_too(tmp_path, monkeypatch):
    """Rank 1 writes nothing; when rank 0's write fails, rank 1 raises as well (no hang)."""
    from detbench.utils import comm

    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    gathered = iter([["rng0", "rng1"], ["could not write model_0000002.pth (disk full)", ""]])
    monkeypatch.setattr(comm, "all_gather", lambda obj: next(gathered))
    with pytest.raises(CheckpointError, match="main process could not save checkpoint model_0000002: "
                                              r"could not write model_0000002\.pth \(disk full\)"):
        Checkpointer(_model(0), save_dir=tmp_path, save_to_disk=False).save("model_0000002", iteration=2)
    gathered = iter([["rng0", "rng1"], ["", ""]])  # every rank succeeded: nothing raised
    Checkpointer(_model(0), save_dir=tmp_path, save_to_disk=False).save("model_0000002", iteration=2)
    assert list(tmp_path.iterdir()) == []
